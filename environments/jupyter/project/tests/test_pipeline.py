"""The whole pipeline on a small copy of params.yaml: data, train, evaluate; deterministic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from __project__ import data, evaluate, train
from __project__.config import DATASET, METRICS, MODEL
from __project__.model import fit

ROOT = Path(__file__).resolve().parents[1]


def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def small_project(tmp_path: Path, **model: object) -> Path:
    p = params()
    p["data"]["samples"] = 120
    p["model"].update(model)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    return tmp_path


def test_dataset_is_deterministic() -> None:
    p = params()
    assert data.make_dataset(p).equals(data.make_dataset(p))
    p["seed"] += 1
    assert not data.make_dataset(p).equals(data.make_dataset(params()))


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_train_then_evaluate(tmp_path: Path, metric: str) -> None:
    root = small_project(tmp_path, metric=metric)
    trained = train.main(root)
    assert (root / DATASET).exists() and (root / MODEL).exists()
    assert trained["test"]["accuracy"] > 0.6
    evaluated = evaluate.main(root)
    assert evaluated["test"]["accuracy"] == trained["test"]["accuracy"]
    assert json.loads((root / METRICS).read_text()) == evaluated


def test_unknown_metric_is_refused(tmp_path: Path) -> None:
    frame = data.make_dataset(params())
    with pytest.raises(SystemExit, match="model.metric"):
        fit(frame, {"model": {"metric": "cosine", "shrinkage": 0.0}})


def test_notebook_is_valid_json() -> None:
    notebook = json.loads((ROOT / "notebooks" / "explore.ipynb").read_text())
    assert notebook["nbformat"] == 4 and notebook["cells"]


def test_same_params_same_bytes(tmp_path: Path) -> None:
    first = small_project(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for root in (first, second):
        train.main(root)
        evaluate.main(root)
    for path in (DATASET, MODEL, METRICS):
        assert (first / path).read_bytes() == (second / path).read_bytes()
