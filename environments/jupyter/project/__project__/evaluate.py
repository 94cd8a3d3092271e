"""Evaluate: `python -m __project__.evaluate` scores models/model.json on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from __project__.config import METRICS, MODEL, load_params, read_json, write_json
from __project__.data import load_split
from __project__.model import accuracy, predict


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    _, test = load_split(root, params)
    model = read_json(root / MODEL)
    predicted = predict(model, test)
    per_class = {
        f"class_{label}": round(float((predicted[test["label"] == label] == label).mean()), 6)
        for label in sorted(test["label"].unique())
    }
    metrics = read_json(root / METRICS) if (root / METRICS).exists() else {}
    metrics["test"] = {"accuracy": accuracy(model, test), "recall": per_class, "samples": len(test)}
    write_json(root / METRICS, metrics)
    print(f"test accuracy {metrics['test']['accuracy']} on {len(test)} rows")
    return metrics


if __name__ == "__main__":
    main()
