"""Engine label keys have one home (envd/model/names.py): no other module spells one out, so
what writes a label and what reads it cannot drift apart."""

from __future__ import annotations

import ast
from pathlib import Path

from envd.model import names

ROOT = Path(__file__).resolve().parents[3]
LABEL_KEYS = {value for key, value in vars(names).items() if key.endswith("_LABEL")}
# Spelled out still, and why: warm.py belongs to another branch (switch it when it merges);
# mlflow.py writes MLflow run tags, which share some spellings but are not engine labels.
NOT_YET = {"envd/services/warm.py", "envd/gateways/mlflow.py"}


def label_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string constant that is a label key or a `key=value` filter."""
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.split("=", 1)[0] in LABEL_KEYS
    )


def test_label_keys_are_distinct_and_envd_namespaced() -> None:
    spelled = [value for key, value in vars(names).items() if key.endswith("_LABEL")]
    assert len(spelled) == len(set(spelled)) >= 10
    assert all(key.startswith("envd.") for key in spelled)


def test_no_module_but_names_spells_a_label_key() -> None:
    found = []
    for path in sorted((ROOT / "envd").rglob("*.py")) + sorted((ROOT / "cli").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "envd/model/names.py" or rel in NOT_YET or rel.startswith("envd/v1/"):
            continue
        found += [f"{rel}:{line}: {text!r}" for line, text in label_literals(path.read_text())]
    assert found == []


def test_the_check_catches_a_spelled_out_key() -> None:
    assert label_literals('labels = {"envd.role": "step"}\nfilter = "envd.owner=abc"\n') == [
        (1, "envd.role"),
        (2, "envd.owner=abc"),
    ]
