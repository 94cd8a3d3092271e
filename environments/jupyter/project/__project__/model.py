"""Nearest centroid: each class is the mean of its rows; a row gets the closest class."""

from __future__ import annotations

from typing import Any

import pandas as pd

METRICS = ("euclidean", "manhattan")


def fit(train: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    features = [c for c in train.columns if c != "label"]
    centroids = train.groupby("label")[features].mean()
    shrink = float(params["model"]["shrinkage"])
    centroids = (1 - shrink) * centroids + shrink * train[features].mean()
    metric = params["model"]["metric"]
    if metric not in METRICS:
        raise SystemExit(f"params.yaml: model.metric {metric!r} is not one of {', '.join(METRICS)}")
    return {
        "metric": metric,
        "features": features,
        "centroids": {
            str(label): [round(float(v), 8) for v in row] for label, row in centroids.iterrows()
        },
    }


def predict(model: dict[str, Any], frame: pd.DataFrame) -> pd.Series:
    x = frame[model["features"]]
    distances = {}
    for label, centre in model["centroids"].items():
        diff = x - pd.Series(centre, index=model["features"])
        if model["metric"] == "manhattan":
            distances[int(label)] = diff.abs().sum(axis=1)
        else:
            distances[int(label)] = (diff**2).sum(axis=1) ** 0.5
    return pd.DataFrame(distances).idxmin(axis=1)


def accuracy(model: dict[str, Any], frame: pd.DataFrame) -> float:
    return round(float((predict(model, frame) == frame["label"]).mean()), 6)
