"""Evaluate: `python -m __project__.evaluate` scores models/model.json on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from __project__.config import METRICS, MODEL, load_params, read_json, write_json
from __project__.data import ensure_dataset, read_dataset, split
from __project__.model import Model, accuracy, log_loss


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    saved = read_json(root / MODEL)
    model = Model([float(w) for w in saved["weights"]], float(saved["bias"]))
    rows = read_dataset(ensure_dataset(root, params))
    _, test_rows = split(rows, params["data"]["test_fraction"], params["seed"])
    metrics = read_json(root / METRICS) if (root / METRICS).exists() else {}
    metrics["test"] = {
        "accuracy": round(accuracy(model, test_rows), 6),
        "log_loss": round(log_loss(model, test_rows), 6),
        "samples": len(test_rows),
    }
    write_json(root / METRICS, metrics)
    print(f"test accuracy {metrics['test']['accuracy']} on {len(test_rows)} rows")
    return metrics


if __name__ == "__main__":
    main()
