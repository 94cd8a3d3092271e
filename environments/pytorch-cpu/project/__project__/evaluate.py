"""Evaluate: `python -m __project__.evaluate` scores models/model.pt on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from __project__.config import METRICS, MODEL, load_params, read_json, write_json
from __project__.data import load_split
from __project__.model import deterministic, evaluate, make_model


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    deterministic(params["seed"])
    _, (x_test, y_test) = load_split(root, params)
    model = make_model(x_test.shape[1], params)
    model.load_state_dict(torch.load(root / MODEL, weights_only=True))
    metrics = read_json(root / METRICS) if (root / METRICS).exists() else {}
    metrics["test"] = {**evaluate(model, x_test, y_test), "samples": len(y_test)}
    write_json(root / METRICS, metrics)
    print(f"test accuracy {metrics['test']['accuracy']} on {len(y_test)} samples")
    return metrics


if __name__ == "__main__":
    main()
