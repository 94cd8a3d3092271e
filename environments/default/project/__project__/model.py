"""Logistic regression by gradient descent, in pure Python (no numpy needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from __project__.data import Row


@dataclass
class Model:
    weights: list[float]
    bias: float = 0.0

    def probability(self, x: list[float]) -> float:
        z = self.bias + sum(w * v for w, v in zip(self.weights, x, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def predict(self, x: list[float]) -> int:
        return int(self.probability(x) >= 0.5)


def fit(rows: list[Row], learning_rate: float, epochs: int) -> Model:
    model = Model([0.0] * len(rows[0][0]))
    n = len(rows)
    for _ in range(epochs):
        grad_w = [0.0] * len(model.weights)
        grad_b = 0.0
        for x, y in rows:
            error = model.probability(x) - y
            for i, v in enumerate(x):
                grad_w[i] += error * v
            grad_b += error
        model.weights = [
            w - learning_rate * g / n for w, g in zip(model.weights, grad_w, strict=True)
        ]
        model.bias -= learning_rate * grad_b / n
    return model


def accuracy(model: Model, rows: list[Row]) -> float:
    return sum(model.predict(x) == y for x, y in rows) / len(rows)


def log_loss(model: Model, rows: list[Row]) -> float:
    eps = 1e-12
    total = 0.0
    for x, y in rows:
        p = min(max(model.probability(x), eps), 1 - eps)
        total -= y * math.log(p) + (1 - y) * math.log(1 - p)
    return total / len(rows)
