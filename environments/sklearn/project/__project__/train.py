"""Train: `python -m __project__.train` reads params.yaml, writes models/ and metrics.json."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score

from __project__.config import METRICS, MODEL, load_params, write_json
from __project__.data import load_split
from __project__.model import make_model


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    x_train, x_test, y_train, y_test = load_split(root, params)
    model = make_model(params).fit(x_train, y_train)
    (root / MODEL).parent.mkdir(parents=True, exist_ok=True)
    with (root / MODEL).open("wb") as file:
        pickle.dump(model, file, protocol=5)
    metrics = {
        "train": {"accuracy": round(float(accuracy_score(y_train, model.predict(x_train))), 6)},
        "test": {"accuracy": round(float(accuracy_score(y_test, model.predict(x_test))), 6)},
    }
    write_json(root / METRICS, metrics)
    print(
        f"model: {MODEL} ({params['model']['kind']}); test accuracy {metrics['test']['accuracy']}"
    )
    return metrics


if __name__ == "__main__":
    main()
