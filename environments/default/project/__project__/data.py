"""A tiny synthetic data set: two Gaussian classes, made with a fixed seed (pure Python)."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from __project__.config import DATASET, load_params

Row = tuple[list[float], int]


def make_dataset(samples: int, features: int, separation: float, seed: int) -> list[Row]:
    rng = random.Random(seed)
    rows: list[Row] = []
    for _ in range(samples):
        label = rng.randrange(2)
        centre = separation / 2 if label else -separation / 2
        rows.append(([round(rng.gauss(centre, 1.0), 6) for _ in range(features)], label))
    return rows


def write_dataset(path: Path, rows: list[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([f"x{i}" for i in range(len(rows[0][0]))] + ["label"])
        for x, y in rows:
            writer.writerow([f"{v:.6f}" for v in x] + [y])


def read_dataset(path: Path) -> list[Row]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        next(reader)
        return [([float(v) for v in row[:-1]], int(row[-1])) for row in reader]


def ensure_dataset(root: Path, params: dict[str, Any]) -> Path:
    """data/dataset.csv, made from params if it is not there yet."""
    path = root / DATASET
    if not path.exists():
        p = params["data"]
        rows = make_dataset(p["samples"], p["features"], p["separation"], params["seed"])
        write_dataset(path, rows)
    return path


def split(rows: list[Row], test_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """A fixed shuffle, then the first part for training and the rest for testing."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = len(rows) - int(len(rows) * test_fraction)
    return [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]


def main(root: Path | None = None) -> Path:
    root = root or Path.cwd()
    path = ensure_dataset(root, load_params(root))
    print(f"data set: {path.relative_to(root)}")
    return path


if __name__ == "__main__":
    main()
