"""Evaluate: `python -m __project__.evaluate` scores models/model.pkl on the test split."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from __project__.config import METRICS, MODEL, load_params, read_json, write_json
from __project__.data import load_split


def main(root: Path | None = None) -> dict[str, Any]:
    root = root or Path.cwd()
    params = load_params(root)
    _, x_test, _, y_test = load_split(root, params)
    with (root / MODEL).open("rb") as file:
        model = pickle.load(file)  # our own file, written by train.py
    proba = model.predict_proba(x_test)[:, 1]
    predicted = model.predict(x_test)
    metrics = read_json(root / METRICS) if (root / METRICS).exists() else {}
    metrics["test"] = {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
        "f1": round(float(f1_score(y_test, predicted)), 6),
        "roc_auc": round(float(roc_auc_score(y_test, proba)), 6),
        "log_loss": round(float(log_loss(y_test, proba)), 6),
        "samples": len(y_test),
    }
    write_json(root / METRICS, metrics)
    print(f"test accuracy {metrics['test']['accuracy']}, ROC AUC {metrics['test']['roc_auc']}")
    return metrics


if __name__ == "__main__":
    main()
