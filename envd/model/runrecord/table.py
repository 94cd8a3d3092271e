"""The `envctl runs` table (what varies from run to run), `--where` filters and sorting."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from envd.model.runrecord.parsing import as_number
from envd.model.runrecord.record import RunRecord

# ------------------------------------------------------------------ table


def format_number(value: float) -> str:
    """A metric for a table cell: up to 6 significant digits, integers without a point."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


@dataclass(frozen=True)
class RunsTable:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    param_columns: tuple[str, ...] = ()
    metric_columns: tuple[str, ...] = ()


def varying(runs: Sequence[RunRecord]) -> tuple[list[str], list[str]]:
    """The params and metrics whose values differ between runs (missing counts as a value).

    With fewer than two runs nothing varies, so every column is shown.
    """
    params = [r.param_values for r in runs]
    param_keys = sorted({k for p in params for k in p})
    metric_keys = sorted({k for r in runs for k in r.metrics})
    if len(runs) < 2:
        return param_keys, metric_keys
    varying_params = [k for k in param_keys if len({p.get(k) for p in params}) > 1]
    varying_metrics = [k for k in metric_keys if len({r.metrics.get(k) for r in runs}) > 1]
    return varying_params, varying_metrics


def runs_table(
    runs: Sequence[RunRecord],
    *,
    all_columns: bool = False,
    id_width: int = 12,
) -> RunsTable:
    """One row per run: id, exit status, then the params and metrics that vary."""
    if all_columns:
        param_cols = sorted({k for r in runs for k in r.param_values})
        metric_cols = sorted({k for r in runs for k in r.metrics})
    else:
        param_cols, metric_cols = varying(runs)
    headers = ("run", "exit", *param_cols, *metric_cols)
    rows = []
    for run in runs:
        values = run.param_values
        rows.append(
            (
                run.id[:id_width],
                str(run.exit_code),
                *(values.get(k, "") for k in param_cols),
                *(format_number(run.metrics[k]) if k in run.metrics else "" for k in metric_cols),
            )
        )
    return RunsTable(headers, tuple(rows), tuple(param_cols), tuple(metric_cols))


def _truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


def _is_numeric(text: str) -> bool:
    return as_number(text) is not None


def render_table(table: RunsTable, *, width: int = 80, min_column: int = 6, gap: int = 2) -> str:
    """Plain-text columns that fit in `width` characters.

    Wide columns are shortened (with `…`) down to `min_column`; if that is not enough, the
    rightmost columns are left out and the last line says how many. Numbers align right.
    """
    headers = list(table.headers)
    if not headers:
        return ""
    rows = [[c.replace("\n", " ") for c in row] for row in table.rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def total(ws: list[int]) -> int:
        return sum(ws) + gap * (len(ws) - 1)

    while total(widths) > width:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= min_column:
            break
        widths[widest] = max(min_column, widths[widest] - (total(widths) - width))
    dropped = 0
    while total(widths) > width and len(widths) > 1:
        widths.pop()
        dropped += 1
    shown = len(widths)
    numeric = [
        bool(rows) and all(_is_numeric(r[i]) or r[i] == "" for r in rows) for i in range(shown)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i in range(shown):
            cell = _truncate(cells[i], widths[i])
            parts.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return (" " * gap).join(parts).rstrip()

    out = [line(headers)] + [line(r) for r in rows]
    if dropped:
        out.append(f"(+{dropped} more column{'s' if dropped > 1 else ''}: widen the terminal)")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ filter and sort

_WHERE_RE = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(==|=|!=|<=|>=|<|>)\s*(.*?)\s*$")
Op = Literal["=", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Where:
    """A `--where KEY OP VALUE` filter on a param or a metric."""

    key: str
    op: Op
    value: str

    def matches(self, run: RunRecord) -> bool:
        actual: str | None
        if self.key in run.metrics:
            actual = format_number(run.metrics[self.key])
            actual_number: float | None = run.metrics[self.key]
        else:
            actual = run.param_values.get(self.key)
            actual_number = as_number(actual) if actual is not None else None
        if actual is None:
            return self.op == "!="
        wanted = as_number(self.value)
        if self.op in ("=", "!="):
            if actual_number is not None and wanted is not None:
                equal = actual_number == wanted
            else:
                equal = actual == self.value
            return equal if self.op == "=" else not equal
        if actual_number is None or wanted is None:
            return False
        return {
            "<": actual_number < wanted,
            "<=": actual_number <= wanted,
            ">": actual_number > wanted,
            ">=": actual_number >= wanted,
        }[self.op]


def parse_where(expression: str) -> Where:
    """`lr=0.1`, `model.depth!=3`, `accuracy>=0.9` (numbers compare as numbers)."""
    match = _WHERE_RE.match(expression)
    if not match:
        raise ValueError(f"--where {expression!r}: expected KEY=VALUE (or !=, <, <=, >, >=)")
    key, op, value = match.groups()
    op = "=" if op == "==" else op
    if op in ("<", "<=", ">", ">=") and as_number(value) is None:
        raise ValueError(f"--where {expression!r}: {op} needs a number")
    return Where(key, op, value)  # type: ignore[arg-type]


def filter_runs(runs: Iterable[RunRecord], wheres: Sequence[Where]) -> list[RunRecord]:
    return [run for run in runs if all(w.matches(run) for w in wheres)]


def sort_runs(runs: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Sort by a metric, ascending; `-name` for descending. Runs without it go last."""
    descending = key.startswith("-")
    name = key.lstrip("-+")
    runs = list(runs)
    have = [r for r in runs if name in r.metrics]
    missing = [r for r in runs if name not in r.metrics]
    have.sort(key=lambda r: r.metrics[name], reverse=descending)
    return have + missing
