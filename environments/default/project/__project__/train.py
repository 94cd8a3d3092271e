"""Train: `python -m __project__.train` reads params.yaml, writes models/ and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from __project__.config import METRICS, MODEL, load_params, write_json
from __project__.data import ensure_dataset, read_dataset, split
from __project__.model import accuracy, fit, log_loss


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    rows = read_dataset(ensure_dataset(root, params))
    train_rows, test_rows = split(rows, params["data"]["test_fraction"], params["seed"])
    model = fit(train_rows, params["model"]["learning_rate"], params["model"]["epochs"])
    write_json(
        root / MODEL,
        {"weights": [round(w, 10) for w in model.weights], "bias": round(model.bias, 10)},
    )
    metrics = {
        "train": {
            "accuracy": round(accuracy(model, train_rows), 6),
            "log_loss": round(log_loss(model, train_rows), 6),
        },
        "test": {"accuracy": round(accuracy(model, test_rows), 6)},
    }
    write_json(root / METRICS, metrics)
    print(f"model: {MODEL}; train accuracy {metrics['train']['accuracy']}")
    return metrics


if __name__ == "__main__":
    main()
