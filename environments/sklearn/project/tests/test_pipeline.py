"""The whole pipeline on a small copy of params.yaml: data, train, evaluate; deterministic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from __project__ import data, evaluate, train
from __project__.config import DATASET, METRICS, MODEL
from __project__.model import make_model

ROOT = Path(__file__).resolve().parents[1]


def small_project(tmp_path: Path, **model: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["samples"] = 200
    params["model"].update(model)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_dataset_is_deterministic() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert data.make_dataset(params).equals(data.make_dataset(params))
    params["seed"] += 1
    other = data.make_dataset(params)
    params["seed"] -= 1
    assert not other.equals(data.make_dataset(params))


@pytest.mark.parametrize("kind", ["random_forest", "logistic_regression"])
def test_train_then_evaluate(tmp_path: Path, kind: str) -> None:
    root = small_project(tmp_path, kind=kind)
    trained = train.main(root)
    assert (root / DATASET).exists() and (root / MODEL).exists()
    assert trained["test"]["accuracy"] > 0.7
    evaluated = evaluate.main(root)
    assert evaluated["test"]["accuracy"] == trained["test"]["accuracy"]
    assert 0.0 <= evaluated["test"]["roc_auc"] <= 1.0
    assert json.loads((root / METRICS).read_text()) == evaluated


def test_unknown_model_kind_is_refused() -> None:
    with pytest.raises(SystemExit, match="model.kind"):
        make_model({"seed": 0, "model": {"kind": "magic"}})


def test_same_params_same_bytes(tmp_path: Path) -> None:
    first = small_project(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for root in (first, second):
        train.main(root)
        evaluate.main(root)
    for path in (DATASET, MODEL, METRICS):
        assert (first / path).read_bytes() == (second / path).read_bytes()
