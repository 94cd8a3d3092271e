"""A small multi-layer perceptron, and the settings that make training deterministic."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def deterministic(seed: int) -> None:
    """Same seed, same bytes: one thread, deterministic kernels, seeded initialisation."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def make_model(features: int, params: dict[str, Any]) -> nn.Module:
    hidden = params["model"]["hidden"]
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 2))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    return {
        "accuracy": round(float((logits.argmax(dim=1) == y).float().mean()), 6),
        "loss": round(float(nn.functional.cross_entropy(logits, y)), 6),
    }
