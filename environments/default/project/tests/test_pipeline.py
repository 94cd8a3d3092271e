"""The whole pipeline on a small copy of params.yaml: data, train, evaluate; deterministic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from __project__ import data, evaluate, train
from __project__.config import DATASET, METRICS, MODEL

ROOT = Path(__file__).resolve().parents[1]


def small_project(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["samples"] = 120
    params["model"]["epochs"] = 50
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_dataset_is_deterministic() -> None:
    a = data.make_dataset(50, 3, 1.0, seed=7)
    assert a == data.make_dataset(50, 3, 1.0, seed=7)
    assert a != data.make_dataset(50, 3, 1.0, seed=8)
    assert {y for _, y in a} == {0, 1}


def test_split_keeps_every_row_once() -> None:
    rows = data.make_dataset(40, 2, 1.0, seed=0)
    train_rows, test_rows = data.split(rows, 0.25, seed=0)
    assert len(test_rows) == 10 and len(train_rows) == 30
    assert sorted(map(str, train_rows + test_rows)) == sorted(map(str, rows))


def test_train_then_evaluate(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    trained = train.main(root)
    assert (root / DATASET).exists() and (root / MODEL).exists()
    assert trained["train"]["accuracy"] > 0.7  # the classes are separable enough
    evaluated = evaluate.main(root)
    assert evaluated["test"]["accuracy"] == trained["test"]["accuracy"]
    assert json.loads((root / METRICS).read_text()) == evaluated


def test_same_params_same_bytes(tmp_path: Path) -> None:
    first = small_project(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for root in (first, second):
        train.main(root)
        evaluate.main(root)
    for path in (DATASET, MODEL, METRICS):
        assert (first / path).read_bytes() == (second / path).read_bytes()
