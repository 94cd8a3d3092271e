"""Where things are, and the params every entry point reads (a config file, not CLI flags)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
DATASET = Path("data") / "dataset.csv"
MODEL = Path("models") / "model.json"
METRICS = Path("metrics.json")


def load_params(root: Path | None = None) -> dict[str, Any]:
    """params.yaml from the project root (the current directory by default)."""
    path = (root or Path.cwd()) / PARAMS_FILE
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(params, dict):
        raise SystemExit(f"{path}: expected a mapping of params")
    return params


def write_json(path: Path, value: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indentation): same values, same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
