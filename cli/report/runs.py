"""What the report shows, from records alone (pure): the table, the params that vary, the metric."""

from __future__ import annotations

import math
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envd.errors import NotFound
from envd.model.runrecord import RunRecord, format_number, varying

_ANCHOR_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class ReportRun:
    """One run as a source gives it: the model's record, plus what the page says besides."""

    record: RunRecord
    finished: bool = True
    origin: str = ""  # "" recorded here; else where it came from ("imported", a registry, ...)
    full: Mapping[str, Any] = field(default_factory=dict)  # the whole record, shown as JSON


@dataclass(frozen=True)
class Report:
    title: str
    runs: tuple[ReportRun, ...]
    params: tuple[str, ...]  # the params that vary between the runs (all of them for one run)
    metrics: tuple[str, ...]  # every metric any run has
    metric: str  # the one charted against each param ("" when no run has a metric)
    varying_metrics: tuple[str, ...]  # the metrics that differ between the runs
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    anchors: tuple[str, ...]  # per run, the id of its record's section in the page


def build_report(title: str, runs: Sequence[ReportRun], metric: str = "") -> Report:
    """The page's content. `metric` must be one of the runs' metrics; default: the first one
    that differs between the runs (else the first)."""
    records = [r.record for r in runs]
    params, moving = varying(records)
    metrics = sorted({name for r in records for name in r.metrics})
    if metric and metric not in metrics:
        known = ", ".join(metrics) if metrics else "none"
        raise NotFound(
            f"metric {metric!r}: none of the {len(runs)} runs in the report has it",
            hint=f"choose one of their metrics with --metric (they have: {known})",
        )
    chosen = metric or (moving[0] if moving else metrics[0] if metrics else "")
    headers = (
        "run",
        "when",
        "status",
        "commit",
        "command",
        *params,
        *metrics,
        "environment",
        "origin",
    )
    rows = tuple(_row(run, params, metrics) for run in runs)
    return Report(
        title=title,
        runs=tuple(runs),
        params=tuple(params),
        metrics=tuple(metrics),
        metric=chosen,
        varying_metrics=tuple(moving),
        headers=headers,
        rows=rows,
        anchors=anchors([r.record.id for r in runs]),
    )


def anchors(ids: Sequence[str]) -> tuple[str, ...]:
    """`run-<id>` where the id is plain (and unique), else `run-<n>`: ids may come from others."""
    out: list[str] = []
    seen: set[str] = set()
    for n, run_id in enumerate(ids):
        anchor = f"run-{run_id}" if _ANCHOR_SAFE.match(run_id) else f"run-{n}"
        if anchor in seen:
            anchor = f"run-{n}"
        seen.add(anchor)
        out.append(anchor)
    return tuple(out)


def _row(run: ReportRun, params: Sequence[str], metrics: Sequence[str]) -> tuple[str, ...]:
    r = run.record
    values = r.param_values
    commit = (r.code.commit[:8] + ("+" if r.code.dirty else "")) if r.code.commit else "-"
    return (
        r.id[:12],
        when(r.started_at),
        status(run),
        commit,
        shlex.join(r.command),
        *(values.get(k, "") for k in params),
        *(format_number(r.metrics[k]) if k in r.metrics else "" for k in metrics),
        short_digest(r.environment_hash),
        run.origin,
    )


def short_digest(digest: str) -> str:
    """The first 12 hex digits of a digest, without its `sha256:`; "-" for none."""
    return digest.removeprefix("sha256:")[:12] or "-"


def when(timestamp: float) -> str:
    """Local time to the minute; "-" for a time no clock shows (a record may say anything)."""
    try:
        if not math.isfinite(timestamp) or timestamp <= 0:
            return "-"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
    except (OverflowError, ValueError, OSError):
        return "-"


def status(run: ReportRun) -> str:
    if not run.finished:
        return "running"
    return "ok" if run.record.exit_code == 0 else f"exit {run.record.exit_code}"


def as_number(text: str) -> float | None:
    """A param's text as a finite number, else None (it is then a category)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
