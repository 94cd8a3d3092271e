"""A small synthetic data set: Gaussian blobs around random centres, fixed seed (pandas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from __project__.config import DATASET, load_params


def make_dataset(params: dict[str, Any]) -> pd.DataFrame:
    p = params["data"]
    rng = np.random.default_rng(params["seed"])
    centres = rng.uniform(-2, 2, size=(p["classes"], p["features"]))
    labels = rng.integers(0, p["classes"], size=p["samples"])
    x = centres[labels] + rng.normal(0.0, p["spread"], size=(p["samples"], p["features"]))
    frame = pd.DataFrame(x.round(6), columns=[f"x{i}" for i in range(p["features"])])
    frame["label"] = labels
    return frame


def ensure_dataset(root: Path, params: dict[str, Any]) -> Path:
    """data/dataset.csv, made from params if it is not there yet."""
    path = root / DATASET
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_dataset(params).to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
    return path


def load_split(root: Path, params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test): a fixed shuffle of data/dataset.csv."""
    frame = pd.read_csv(ensure_dataset(root, params))
    shuffled = frame.sample(frac=1.0, random_state=params["seed"]).reset_index(drop=True)
    cut = len(shuffled) - int(len(shuffled) * params["data"]["test_fraction"])
    return shuffled.iloc[:cut], shuffled.iloc[cut:]


def main(root: Path | None = None) -> Path:
    root = root or Path.cwd()
    path = ensure_dataset(root, load_params(root))
    print(f"data set: {path.relative_to(root)}")
    return path


if __name__ == "__main__":
    main()
