"""`envctl runs diff A B`: what changed between two runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from envd.model.runrecord.record import RunRecord
from envd.model.runrecord.table import format_number

# ------------------------------------------------------------------ diff

ChangeKind = Literal[
    "command", "exit", "param", "metric", "data", "output", "code", "environment", "host", "lock"
]


@dataclass(frozen=True)
class Change:
    """One difference between two runs; `before`/`after` are None where a side lacks it."""

    kind: ChangeKind
    name: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.before is None:
            return f"{self.kind} {self.name}: added {self.after}"
        if self.after is None:
            return f"{self.kind} {self.name}: removed (was {self.before})"
        return f"{self.kind} {self.name}: {self.before} -> {self.after}"


def _mapping_changes(kind: ChangeKind, a: Mapping[str, str], b: Mapping[str, str]) -> list[Change]:
    return [
        Change(kind, key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def diff_runs(a: RunRecord, b: RunRecord) -> list[Change]:
    """Everything that differs between run `a` and run `b`, in a fixed order."""
    changes: list[Change] = []
    if a.command != b.command:
        changes.append(Change("command", "command", " ".join(a.command), " ".join(b.command)))
    if a.exit_code != b.exit_code:
        changes.append(Change("exit", "exit code", str(a.exit_code), str(b.exit_code)))
    changes += _mapping_changes("param", a.param_values, b.param_values)
    changes += _mapping_changes(
        "metric",
        {k: format_number(v) for k, v in a.metrics.items()},
        {k: format_number(v) for k, v in b.metrics.items()},
    )
    changes += _mapping_changes("data", a.data, b.data)
    changes += _mapping_changes("output", a.outputs, b.outputs)
    if a.code.commit != b.code.commit:
        changes.append(Change("code", "commit", a.code.commit or None, b.code.commit or None))
    if a.code.dirty != b.code.dirty:
        changes.append(Change("code", "dirty", str(a.code.dirty), str(b.code.dirty)))
    if a.code.diff_sha256 != b.code.diff_sha256:
        changes.append(
            Change("code", "diff", a.code.diff_sha256 or None, b.code.diff_sha256 or None)
        )
    for kind, name, before, after in (
        ("environment", "environment hash", a.environment_hash, b.environment_hash),
        ("environment", "image", a.image, b.image),
        ("host", "host hash", a.host_hash, b.host_hash),
        ("lock", "envd.lock sha256", a.lock_sha256, b.lock_sha256),
    ):
        if before != after:
            changes.append(Change(kind, name, before or None, after or None))  # type: ignore[arg-type]
    return changes


def render_diff(a: RunRecord, b: RunRecord, changes: Sequence[Change]) -> str:
    if not changes:
        return f"runs {a.id} and {b.id}: no differences\n"
    lines = [f"runs {a.id} -> {b.id}: {len(changes)} change{'s' if len(changes) > 1 else ''}"]
    lines += [f"  {c.describe()}" for c in changes]
    return "\n".join(lines) + "\n"
