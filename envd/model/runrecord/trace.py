"""`envctl trace FILE`: which runs made these bytes, best first."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from envd.model.runrecord.record import RunRecord
from envd.model.runrecord.table import format_number

# ------------------------------------------------------------------ trace


@dataclass(frozen=True)
class TraceResult:
    """Which runs produced a file: `exact` wrote these bytes at this path (newest first),
    `same_content` wrote these bytes elsewhere, `overwritten` wrote this path with other bytes
    (the file changed after them)."""

    exact: tuple[RunRecord, ...]
    same_content: tuple[tuple[RunRecord, str], ...]
    overwritten: tuple[RunRecord, ...]

    @property
    def producer(self) -> RunRecord | None:
        return self.exact[0] if self.exact else None


def trace_rank(now: float) -> Callable[[RunRecord], tuple[bool, bool, float, str]]:
    """The order `trace` lists runs in (reversed): runs made here before imported ones, a
    run dated after `now` after every other, then the newest first."""

    def rank(run: RunRecord) -> tuple[bool, bool, float, str]:
        return (not run.imported, run.ended_at <= now, run.ended_at, run.id)

    return rank


def trace(
    path: str, sha256: str, runs: Iterable[RunRecord], *, now: float = math.inf
) -> TraceResult:
    """Find the runs behind the file `path` (project-relative) whose content is `sha256`.

    Each list is in `trace_rank` order: the producer is the newest run made here, an
    imported run only when no local one wrote these bytes, and never a run dated after
    `now` while another is there."""
    exact: list[RunRecord] = []
    same: list[tuple[RunRecord, str]] = []
    overwritten: list[RunRecord] = []
    for run in sorted(runs, key=trace_rank(now), reverse=True):
        recorded = run.outputs.get(path)
        if recorded == sha256:
            exact.append(run)
        elif recorded is not None:
            overwritten.append(run)
        else:
            for other, digest in sorted(run.outputs.items()):
                if digest == sha256:
                    same.append((run, other))
                    break
    return TraceResult(tuple(exact), tuple(same), tuple(overwritten))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def imported_mark(run: RunRecord) -> str:
    """` (imported from ORIGIN)` for an imported run, "" for one made here."""
    return f" (imported from {run.origin})" if run.imported else ""


def render_trace(path: str, sha256: str, result: TraceResult) -> str:
    """`envctl trace FILE`: the run behind these bytes, and everything it ran with."""
    run = result.producer
    lines: list[str] = []
    if run is None:
        lines.append(f"{path} (sha256 {sha256[:12]}): no recorded run wrote these bytes")
        if result.overwritten:
            ids = ", ".join(r.id + imported_mark(r) for r in result.overwritten)
            lines.append(f"  changed since it was written by: {ids}")
        for other, other_path in result.same_content:
            lines.append(
                f"  the same bytes were written as {other_path} by run {other.id}"
                + imported_mark(other)
            )
        return "\n".join(lines) + "\n"
    code = run.code
    commit = code.commit[:12] if code.commit else "(no git repository)"
    if code.dirty:
        commit += f" + uncommitted changes (diff sha256 {code.diff_sha256[:12]})"
    lines += [
        f"{path} (sha256 {sha256[:12]}) was written by run {run.id}{imported_mark(run)}",
        f"  command:      {' '.join(run.command)}  (exit {run.exit_code})",
        f"  when:         {_when(run.started_at)} - {_when(run.ended_at)}",
        f"  environment:  {run.environment_hash or '-'}  image {run.image or '-'}",
        f"  host:         {run.host_hash or '-'}",
        f"  lock:         {run.lock_sha256 or '-'}",
        f"  code:         {commit}",
    ]
    for name in sorted(run.params):
        lines.append(f"  params:       {name}")
    for key, value in run.param_values.items():
        lines.append(f"    {key} = {value}")
    for data_path, digest in sorted(run.data.items()):
        lines.append(f"  data:         {data_path}  {digest[:12]}")
    for name, number in sorted(run.metrics.items()):
        lines.append(f"  metric:       {name} = {format_number(number)}")
    if len(result.exact) > 1:
        others = ", ".join(r.id + imported_mark(r) for r in result.exact[1:])
        lines.append(f"  also written, with the same bytes, by: {others}")
    return "\n".join(lines) + "\n"
