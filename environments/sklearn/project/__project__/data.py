"""A small classification data set from scikit-learn's make_classification, fixed seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from __project__.config import DATASET, load_params


def make_dataset(params: dict[str, Any]) -> pd.DataFrame:
    p = params["data"]
    x, y = make_classification(
        n_samples=p["samples"],
        n_features=p["features"],
        n_informative=p["informative"],
        n_redundant=0,
        random_state=params["seed"],
    )
    frame = pd.DataFrame(x.round(6), columns=[f"x{i}" for i in range(x.shape[1])])
    frame["label"] = y
    return frame


def ensure_dataset(root: Path, params: dict[str, Any]) -> Path:
    """data/dataset.csv, made from params if it is not there yet."""
    path = root / DATASET
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_dataset(params).to_csv(path, index=False, float_format="%.6f", lineterminator="\n")
    return path


def load_split(
    root: Path, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """x_train, x_test, y_train, y_test: a fixed, stratified split of data/dataset.csv."""
    frame = pd.read_csv(ensure_dataset(root, params))
    x, y = frame.drop(columns="label"), frame["label"]
    return train_test_split(
        x, y, test_size=params["data"]["test_fraction"], random_state=params["seed"], stratify=y
    )


def main(root: Path | None = None) -> Path:
    root = root or Path.cwd()
    path = ensure_dataset(root, load_params(root))
    print(f"data set: {path.relative_to(root)}")
    return path


if __name__ == "__main__":
    main()
