"""Synthetic tensors: a random linear boundary plus noise, made with a fixed seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from __project__.config import DATASET, load_params

Tensors = tuple[torch.Tensor, torch.Tensor]


def make_dataset(samples: int, features: int, noise: float, seed: int) -> Tensors:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    w = torch.randn(features, generator=generator)
    score = x @ w + noise * torch.randn(samples, generator=generator)
    return x, (score > 0).long()


def ensure_dataset(root: Path, params: dict[str, Any]) -> Path:
    """data/dataset.pt, made from params if it is not there yet."""
    path = root / DATASET
    if not path.exists():
        p = params["data"]
        x, y = make_dataset(p["samples"], p["features"], p["noise"], params["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": x, "y": y}, path)
    return path


def load_split(root: Path, params: dict[str, Any]) -> tuple[Tensors, Tensors]:
    """(x_train, y_train), (x_test, y_test): a fixed permutation of data/dataset.pt."""
    saved = torch.load(ensure_dataset(root, params), weights_only=True)
    x, y = saved["x"], saved["y"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(params["seed"]))
    cut = len(x) - int(len(x) * params["data"]["test_fraction"])
    train, test = order[:cut], order[cut:]
    return (x[train], y[train]), (x[test], y[test])


def main(root: Path | None = None) -> Path:
    root = root or Path.cwd()
    path = ensure_dataset(root, load_params(root))
    print(f"data set: {path.relative_to(root)}")
    return path


if __name__ == "__main__":
    main()
