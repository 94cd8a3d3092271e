"""The whole pipeline on a small copy of params.yaml: data, train, evaluate; deterministic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from __project__ import data, evaluate, train
from __project__.config import DATASET, METRICS, MODEL

ROOT = Path(__file__).resolve().parents[1]


def small_project(tmp_path: Path) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["samples"] = 256
    params["model"]["epochs"] = 20
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_dataset_is_deterministic() -> None:
    x1, y1 = data.make_dataset(64, 4, 0.1, seed=3)
    x2, y2 = data.make_dataset(64, 4, 0.1, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, data.make_dataset(64, 4, 0.1, seed=4)[0])
    assert set(y1.tolist()) == {0, 1}


def test_train_then_evaluate(tmp_path: Path) -> None:
    root = small_project(tmp_path)
    trained = train.main(root)
    assert (root / DATASET).exists() and (root / MODEL).exists()
    assert trained["test"]["accuracy"] > 0.7  # a linear boundary: easy
    evaluated = evaluate.main(root)
    assert evaluated["test"]["accuracy"] == trained["test"]["accuracy"]
    assert json.loads((root / METRICS).read_text()) == evaluated


def test_same_params_same_weights(tmp_path: Path) -> None:
    first = small_project(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    for root in (first, second):
        train.main(root)
    a = torch.load(first / MODEL, weights_only=True)
    b = torch.load(second / MODEL, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / METRICS).read_bytes() == (second / METRICS).read_bytes()
