"""Train: `python -m __project__.train` reads params.yaml, writes models/ and metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from __project__.config import METRICS, MODEL, load_params, write_json
from __project__.data import load_split
from __project__.model import accuracy, fit


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    train, test = load_split(root, params)
    model = fit(train, params)
    write_json(root / MODEL, model)
    metrics = {
        "train": {"accuracy": accuracy(model, train)},
        "test": {"accuracy": accuracy(model, test)},
    }
    write_json(root / METRICS, metrics)
    print(f"model: {MODEL}; test accuracy {metrics['test']['accuracy']}")
    return metrics


if __name__ == "__main__":
    main()
