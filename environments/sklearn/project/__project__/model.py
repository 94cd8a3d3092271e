"""The model named by params.yaml's `model.kind`, with that kind's settings."""

from __future__ import annotations

from typing import Any

from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KINDS = ("random_forest", "logistic_regression")


def make_model(params: dict[str, Any]) -> ClassifierMixin:
    kind = params["model"]["kind"]
    settings = dict(params["model"].get(kind) or {})
    if kind == "random_forest":
        return RandomForestClassifier(random_state=params["seed"], n_jobs=1, **settings)
    if kind == "logistic_regression":
        return make_pipeline(
            StandardScaler(), LogisticRegression(random_state=params["seed"], **settings)
        )
    raise SystemExit(f"params.yaml: model.kind {kind!r} is not one of {', '.join(KINDS)}")
