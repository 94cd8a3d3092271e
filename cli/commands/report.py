"""envctl runs report [PROJECT] -o runs.html: the runs as one self-contained HTML page.

The runs come from one source function returning `ReportRun`s: `local_runs` asks the daemon
(ListRuns, the same filters as `envctl runs`); runs shared to a registry plug in beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.refs import project_ref
from cli.report.runs import ReportRun

if TYPE_CHECKING:
    from cli.client import Client
    from envd.v1 import envd_pb2 as pb

MAX_RUNS = 10_000  # the page holds every record: bounded


@click.command("report")
@click.argument("project", required=False)
@click.option(
    "--output",
    "-o",
    default="runs.html",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Write the page here.",
)
@click.option("--metric", "-m", default="", help="The metric to chart (default: the first).")
@click.option("--where", "-w", "wheres", multiple=True, help="KEY=VALUE (or !=, <, >, <=, >=).")
@click.option("--sort", "-s", default="", help="Sort by a metric (-NAME for descending).")
@click.option("--status", default="", help="ok, failed, running or an exit code.")
@click.option("--limit", "-n", default=500, show_default=True, type=click.IntRange(1, MAX_RUNS))
@click.option("--from", "source", default="", help="The runs shared in REGISTRY/REPO instead.")
@click.pass_obj
def report_cmd(
    obj: AppContext,
    project: str | None,
    output: str,
    metric: str,
    wheres: tuple[str, ...],
    sort: str,
    status: str,
    limit: int,
    source: str = "",
) -> None:
    """Write PROJECT's runs (every project's without one) as one HTML page that works offline:
    the runs table, METRIC against each param that varies, params and metrics side by side
    (parallel coordinates), and each run's full record and environment."""
    from cli.report.page import render, vendored_assets
    from cli.report.runs import build_report
    from envd import __version__
    from envd.errors import NotFound

    ref = project_ref(project) if project else ""
    if source:
        runs = shared_runs(obj.client(), source, limit=limit, wheres=wheres, sort=sort)
        project = project or source
    else:
        runs = local_runs(obj.client(), ref, limit=limit, wheres=wheres, sort=sort, status=status)
    if not runs:
        where = f"project {project}" if project else "any project"
        raise NotFound(
            f"no runs recorded for {where}" + (" match" if wheres or status else ""),
            hint="record one with `envctl enter PROJECT -- COMMAND`, then run the report again",
        )
    title = runs[0].record.project if project else "all projects"
    report = build_report(title, runs, metric)
    write_atomically(output, render(report, vendored_assets(), generator=f"envctl {__version__}"))
    if obj.as_json:
        from cli.output import emit_json

        emit_json({"output": os.path.abspath(output), "runs": len(runs), "metric": report.metric})
        return
    click.echo(f"wrote {output} ({len(runs)} run{'s' if len(runs) != 1 else ''})")


def local_runs(
    client: Client,
    project_ref: str,
    *,
    limit: int,
    wheres: tuple[str, ...] = (),
    sort: str = "",
    status: str = "",
) -> list[ReportRun]:
    """PROJECT's recorded runs (every project's for ""), newest first as `envctl runs` has them."""
    from envd.v1 import envd_pb2 as pb

    ref = pb.ProjectRef(ref=project_ref) if project_ref else pb.ProjectRef()
    reply = client.list_runs(
        pb.ListRunsRequest(project=ref, limit=limit, where=list(wheres), sort=sort, status=status)
    )
    return [from_message(msg) for msg in reply.runs]


def shared_runs(
    client: Client, source: str, *, limit: int, wheres: tuple[str, ...] = (), sort: str = ""
) -> list[ReportRun]:
    """The runs shared in REGISTRY/REPO (`envctl runs --from`), each marked with its reference."""
    from envd.v1 import envd_pb2 as pb

    request = pb.ListSharedRunsRequest(source=source, where=list(wheres), sort=sort, limit=limit)
    reply = client.list_shared_runs(request)
    return [
        ReportRun(
            record=from_message(entry.run).record,
            origin=entry.reference,
            full=from_message(entry.run).full,
        )
        for entry in reply.runs
    ]


def from_message(msg: pb.RunRecord) -> ReportRun:
    from cli.output import message_dict
    from envd.wire import record_from_msg

    return ReportRun(
        record=record_from_msg(msg),
        finished=msg.finished,
        origin="imported" if msg.imported else "",
        full=message_dict(msg),
    )


def write_atomically(path: str, text: str) -> None:
    """Whole or not at all: a temporary file beside `path`, then renamed over it."""
    from envd.errors import EnvdError

    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".runs-report-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise EnvdError(
            f"cannot write the report into {folder}: {exc.strerror}",
            hint="choose another place with -o PATH",
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise EnvdError(
            f"cannot write the report to {path}: {exc.strerror}",
            hint="choose another place with -o PATH",
        ) from None
