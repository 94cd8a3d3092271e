"""envctl runs [PROJECT] (show, diff, export, import), trace, rerun, new."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.context import AppContext
from cli.output import emit_json
from cli.refs import project_ref

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb

LONG_TIMEOUT_S = 3600.0  # a rerun's check may build the environment first


def open_regular(path: str, what: str) -> int:
    """A descriptor for the regular file `path`, opened without blocking (a FIFO does not
    wait for a writer) and checked through the descriptor: a FIFO, a device such as
    /dev/zero, a socket or a folder is refused (exit 2) before anything is read."""
    from envd.errors import UsageError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open {what} {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a folder"
            if stat.S_ISDIR(st.st_mode)
            else "not a regular file"
        )
        raise UsageError(
            f"{what} {path} is {kind}, not a regular file; refused",
            hint="name a file (envd reads only regular files it is given)",
        )
    os.set_blocking(fd, True)
    return fd


def sha256_of(path: str) -> str:
    """The sha256 of the regular file `path`, streamed (`trace` reads nothing else)."""
    with os.fdopen(open_regular(path, "the file"), "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def read_statement(path: str) -> str:
    """A provenance statement's text, read with its bound (MAX_STATEMENT_CHARS bytes): a
    larger file is refused after reading one byte more, never read whole."""
    from envd.model.provenance import MAX_STATEMENT_CHARS, StatementRefused

    with os.fdopen(open_regular(path, "the statement"), "rb") as file:
        raw = file.read(MAX_STATEMENT_CHARS + 1)
    if len(raw) > MAX_STATEMENT_CHARS:
        raise StatementRefused(
            f"{path}: over {MAX_STATEMENT_CHARS >> 20} MiB, larger than any run statement; "
            "not imported"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StatementRefused(
            f"{path}: not UTF-8 text (byte {exc.start}); not a run statement; not imported"
        ) from None


class RunsGroup(click.Group):
    """`runs [PROJECT] [OPTIONS]` lists; `runs show|diff|export|import ...` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@click.group("runs", cls=RunsGroup)
def runs_cmd() -> None:
    """Recorded runs: `envctl runs [PROJECT]` lists them, with the params and metrics that vary.

    `runs show ID`, `runs diff A B`, `runs export ID`, `runs import FILE`.
    """


@runs_cmd.command("list", hidden=True)
@click.argument("project", required=False)
@click.option("--project", "-p", "project_option", default="", help="The same as PROJECT.")
@click.option("--where", "-w", "wheres", multiple=True, help="KEY=VALUE (or !=, <, >, <=, >=).")
@click.option("--sort", "-s", default="", help="Sort by a metric (-NAME for descending).")
@click.option("--status", default="", help="ok, failed, running or an exit code.")
@click.option("--limit", "-n", default=20, show_default=True)
@click.option("--all-columns", "-a", is_flag=True, help="Every param and metric, not only varying.")
@click.option("--json", "as_json", is_flag=True, help="The runs as JSON.")
@click.option("--from", "source", default="", help="The runs shared in REGISTRY/REPO instead.")
@click.pass_obj
def runs_list(
    obj: AppContext,
    project: str | None,
    project_option: str,
    wheres: tuple[str, ...],
    sort: str,
    status: str,
    limit: int,
    all_columns: bool,
    as_json: bool,
    source: str,
) -> None:
    """List PROJECT's runs (every project's without one), or those shared in REGISTRY/REPO."""
    from envd.model.runrecord import render_table, runs_table
    from envd.v1 import envd_pb2 as pb
    from envd.wire import record_from_msg as to_record

    if project and project_option and project != project_option:
        raise click.UsageError(f"two projects given: `{project}` and `{project_option}`")
    if source:
        if project or project_option or status:
            raise click.UsageError("--from lists a registry's runs: no PROJECT or --status")
        _shared_list(obj, source, wheres, sort, limit, all_columns, as_json)
        return
    project = project or project_option
    ref = pb.ProjectRef(ref=project_ref(project)) if project else pb.ProjectRef()
    request = pb.ListRunsRequest(
        project=ref, limit=limit, where=list(wheres), sort=sort, status=status
    )
    reply = obj.client().list_runs(request)
    if as_json or obj.as_json:
        emit_json(reply)
        return
    if not reply.runs:
        click.echo("no runs recorded" + (" match" if wheres or status else ""))
        return
    records = [to_record(r) for r in reply.runs]
    table = runs_table(records, all_columns=all_columns)
    extra = {r.id[:12]: r for r in reply.runs}
    imported = any(r.imported for r in reply.runs)  # then a column says which, and whence
    origin_header = ("origin",) if imported else ()
    headers = (*table.headers[:2], *origin_header, "started", *table.headers[2:])
    headers = (*headers, "commit", "command")
    rows = []
    for row in table.rows:
        msg = extra[row[0]]
        when = time.strftime("%m-%d %H:%M", time.localtime(msg.started_at))
        exit_text = row[1] if msg.finished else "running"
        commit = (msg.git_commit[:8] + ("+" if msg.git_dirty else "")) or "-"
        origin = (f"imported: {msg.origin}" if msg.imported else "here",) if imported else ()
        rows.append((row[0], exit_text, *origin, when, *row[2:], commit, shlex.join(msg.command)))
    width = shutil.get_terminal_size((120, 24)).columns
    shown = type(table)(tuple(headers), tuple(rows), table.param_columns, table.metric_columns)
    click.echo(render_table(shown, width=width), nl=False)


def _shared_list(
    obj: AppContext,
    source: str,
    wheres: tuple[str, ...],
    sort: str,
    limit: int,
    all_columns: bool,
    as_json: bool,
) -> None:
    """`runs --from REGISTRY/REPO`: who shared what, when, at which commit, params, metrics."""
    from envd.model.runrecord import render_table, runs_table
    from envd.v1 import envd_pb2 as pb
    from envd.wire import record_from_msg as to_record

    request = pb.ListSharedRunsRequest(source=source, where=list(wheres), sort=sort, limit=limit)
    reply = obj.client().list_shared_runs(request, timeout=LONG_TIMEOUT_S)
    if as_json or obj.as_json:
        emit_json(reply)
        return
    if not reply.runs:
        click.echo(f"no runs shared in {source}" + (" match" if wheres else ""))
        return
    records = [to_record(e.run) for e in reply.runs]
    table = runs_table(records, all_columns=all_columns)
    extra = {e.run.id[:12]: e for e in reply.runs}
    headers = (*table.headers[:2], "who", "shared", *table.headers[2:], "commit", "command")
    rows = []
    for row in table.rows:
        entry = extra[row[0]]
        msg = entry.run
        commit = (msg.git_commit[:8] + ("+" if msg.git_dirty else "")) or "-"
        when = entry.shared_at[:16].replace("T", " ") or "-"
        rows.append(
            (
                row[0],
                row[1],
                entry.shared_by or "-",
                when,
                *row[2:],
                commit,
                shlex.join(msg.command),
            )
        )
    width = shutil.get_terminal_size((120, 24)).columns
    shown = type(table)(tuple(headers), tuple(rows), table.param_columns, table.metric_columns)
    click.echo(render_table(shown, width=width), nl=False)
    click.echo(f"`envctl pull run {source}:RUN` fetches one", err=True)


@runs_cmd.command("show")
@click.argument("run_id")
@click.option("--diff", "show_diff", is_flag=True, help="Print the uncommitted diff too.")
@click.option("--json", "as_json", is_flag=True, help="The run as JSON.")
@click.pass_obj
def runs_show(obj: AppContext, run_id: str, show_diff: bool, as_json: bool) -> None:
    """Show one run: command, environment, code, params, data, outputs, metrics."""
    from envd.model.runrecord import flatten_params_files, format_number
    from envd.v1 import envd_pb2 as pb

    r = obj.client().get_run(pb.GetRunRequest(id=run_id), timeout=LONG_TIMEOUT_S)
    if as_json or obj.as_json:
        emit_json(r)
        return
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))
    took = f"{r.ended_at - r.started_at:.1f}s" if r.finished else "still running"
    origin = f"  (imported from {r.origin or 'a provenance statement'})" if r.imported else ""
    click.echo(f"run          {r.id}{origin}")
    click.echo(f"project      {r.project}")
    click.echo(f"command      {shlex.join(r.command)}")
    click.echo(f"directory    {r.workdir or '.'} (in the project)")
    click.echo(f"started      {when} ({took})")
    click.echo(f"exit status  {r.exit_code if r.finished else '-'}")
    click.echo(f"image        {r.image or '-'} {r.image_id}".rstrip())
    click.echo(f"environment  {r.environment_hash or '-'}")
    click.echo(f"host         {r.host_hash or '-'}")
    click.echo(f"envd.lock    {r.lock_sha256 or '-'}")
    commit = r.git_commit or "-"
    if r.git_dirty:
        commit += f" + uncommitted changes (diff sha256 {r.diff_sha256 or '-'})"
    click.echo(f"git commit   {commit}")
    values, _ = flatten_params_files(dict(r.params))
    for key, value in values.items():
        click.echo(f"param        {key} = {value}")
    for path, digest in sorted(r.data.items()):
        click.echo(f"data         {path}  {digest}")
    for path, digest in sorted(r.outputs.items()):
        click.echo(f"output       {path}  {digest}")
    for name, number in sorted(r.metrics.items()):
        click.echo(f"metric       {name} = {format_number(number)}")
    for note in r.notes:
        click.echo(f"note         {note}")
    if show_diff and r.diff:
        click.echo("uncommitted diff:")
        click.echo(r.diff, nl=not r.diff.endswith("\n"))


@runs_cmd.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="The changes as JSON.")
@click.pass_obj
def runs_diff(obj: AppContext, a: str, b: str, as_json: bool) -> int:
    """Name what changed from run A to run B: params, metrics, data, outputs, code, environment.

    Exits 0 when nothing differs, 1 otherwise.
    """
    from envd.model.runrecord import render_diff
    from envd.v1 import envd_pb2 as pb
    from envd.wire import record_from_msg as to_record
    from envd.wire import run_change_from_msg

    reply = obj.client().diff_runs(pb.DiffRunsRequest(a=a, b=b), timeout=LONG_TIMEOUT_S)
    if as_json or obj.as_json:
        emit_json(reply)
    else:
        changes = [run_change_from_msg(c) for c in reply.changes]
        click.echo(render_diff(to_record(reply.a), to_record(reply.b), changes), nl=False)
    return 1 if reply.changes else 0


@runs_cmd.command("export")
@click.argument("run_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write it here.")
@click.pass_obj
def runs_export(obj: AppContext, run_id: str, output: str | None) -> None:
    """The run as an in-toto Statement (SLSA Provenance v1): its outputs, and what made them."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().export_run(pb.ExportRunRequest(id=run_id), timeout=LONG_TIMEOUT_S)
    if output:
        Path(output).write_text(reply.statement, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(reply.statement, nl=False)


@runs_cmd.command("import")
@click.argument("statement", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def runs_import(obj: AppContext, statement: str) -> None:
    """Record a run from another envd home's statement, so `trace` finds its outputs here."""
    from envd.v1 import envd_pb2 as pb

    text = read_statement(statement)
    origin = os.path.abspath(statement)
    reply = obj.client().import_run(pb.ImportRunRequest(statement=text, origin=origin))
    if obj.as_json:
        emit_json(reply)
        return
    verb = "imported" if reply.added else "already recorded:"
    click.echo(
        f"{verb} run {reply.run.id} ({len(reply.run.outputs)} outputs) from {reply.run.origin}; "
        f"it is marked as imported, and `rerun` asks before running its command"
    )


@click.command("trace")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--provenance",
    type=click.Path(exists=True, dir_okay=False),
    help="Check FILE against this in-toto statement (e.g. a colleague's) instead.",
)
@click.option("--json", "as_json", is_flag=True, help="The runs as JSON.")
@click.pass_obj
def trace_cmd(obj: AppContext, file: str, provenance: str | None, as_json: bool) -> int:
    """Which run wrote FILE's bytes: its command, environment, code, data, params, metrics.

    Exits 4 when no recorded run wrote these bytes.
    """
    from envd.model.runrecord import TraceResult, render_trace
    from envd.v1 import envd_pb2 as pb
    from envd.wire import record_from_msg as to_record

    digest = sha256_of(file)
    if provenance:
        return _check_provenance(file, digest, Path(provenance), obj.as_json or as_json)
    reply = obj.client().trace(
        pb.TraceRequest(path=os.path.abspath(file), sha256=digest), timeout=LONG_TIMEOUT_S
    )
    if as_json or obj.as_json:
        emit_json(reply)
        return 0
    result = TraceResult(
        tuple(to_record(r) for r in reply.exact), (), tuple(to_record(r) for r in reply.overwritten)
    )
    click.echo(render_trace(reply.path, digest, result), nl=False)
    return 0


def _check_provenance(file: str, digest: str, statement: Path, as_json: bool) -> int:
    from envd.errors import EXIT_VERIFY
    from envd.model.provenance import check_statement

    check = check_statement(read_statement(str(statement)), file, digest)
    if as_json:
        emit_json(
            {
                "ok": check.ok,
                "valid": check.valid,
                "errors": list(check.errors),
                "subject": check.subject,
                "name_matches": check.name_matches,
                "sha256": digest,
            }
        )
    elif check.ok:
        name = "" if check.name_matches else f" (named {check.subject} there)"
        click.echo(f"ok: {file} (sha256 {digest[:12]}) is a subject of {statement}{name}")
    else:
        if not check.valid:
            click.echo(f"INVALID statement {statement}:")
            for error in check.errors:
                click.echo(f"  {error}")
        if not check.subject:
            click.echo(f"MISMATCH: {file} (sha256 {digest[:12]}) is not a subject of {statement}")
    return 0 if check.ok else EXIT_VERIFY


@click.command("rerun")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Run it even though code or data changed.")
@click.option(
    "--project",
    "-p",
    "project",
    default="",
    help="Run it in this registered project (default: the one the run names).",
)
@click.option("--yes", "-y", is_flag=True, help="Run an imported run's command without asking.")
@click.pass_obj
def rerun_cmd(obj: AppContext, run_id: str, force: bool, project: str, yes: bool) -> int:
    """Run a recorded command again in its recorded environment; are its outputs identical?

    It runs where the original ran (the same directory within the project), from wherever
    `rerun` is called. Refuses when the project's environment differs from the run's, and
    (without --force) when its code or data changed. An imported run's command was written
    by whoever made its statement: it is shown and asked about first (or --yes), and one
    without an environment hash is refused. Exits with the command's status if it failed,
    else 0 when every output is identical and 1 when any differs.
    """
    from envd.v1 import envd_pb2 as pb

    client = obj.client()
    request = pb.CheckRerunRequest(id=run_id, force=force)
    if project:
        request.project.ref = project_ref(project)
    check = client.check_rerun(request, timeout=LONG_TIMEOUT_S)
    original = check.run
    click.echo(
        f"rerun {original.id}: {shlex.join(original.command)} in {check.project} "
        f"({check.environment})",
        err=True,
    )
    for change in check.changes:
        click.echo(f"  changed (--force): {change}", err=True)
    if original.imported:
        _confirm_imported(original, check.project, yes)
    code, again = _run_again(obj, check.project, list(original.command), check.directory)
    if not again:
        return code
    reply = client.compare_runs(
        pb.CompareRunsRequest(original=original.id, again=again), timeout=LONG_TIMEOUT_S
    )
    if obj.as_json:
        emit_json({"run": again, "exit_code": code, **_compare_dict(reply)})
    elif reply.total and reply.identical == reply.total:
        click.echo(
            f"reproduced: {reply.identical} of {reply.total} outputs identical (run {again})"
        )
    elif reply.total == 0:
        click.echo(f"run {original.id} recorded no outputs to compare (run {again})")
    else:
        click.echo(
            f"not reproduced: {reply.identical} of {reply.total} outputs identical; "
            f"differing: {', '.join(reply.differing)} (run {again})"
        )
        for change in check.changes:  # what else differed from the original run
            click.echo(f"  also differs: {change}")
        if not check.changes:
            click.echo(f"  code, data and environment were the run's ({check.environment})")
    if code:
        return code
    return 0 if reply.identical == reply.total else 1


def _can_ask() -> bool:
    """Whether a person can answer a question: stdin and stderr are a terminal."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirm_imported(run: pb.RunRecord, project: str, yes: bool) -> None:
    """An imported run's command is someone else's: say so, and run it only when the user
    agrees on a terminal, or passed --yes. Without a terminal and without --yes: refused."""
    from envd.errors import EnvdError

    origin = run.origin or "a provenance statement"
    click.echo(
        f"run {run.id} was imported from {origin}: whoever wrote that statement chose "
        "this command\n"
        f"  command:      {shlex.join(run.command)}\n"
        f"  project:      {project} (mounted read-write)\n"
        f"  environment:  {run.environment_hash}",
        err=True,
    )
    if yes:
        return
    if not _can_ask():
        raise EnvdError(
            f"run {run.id} was imported from {origin}; its command was not run without "
            "confirmation",
            hint="read the command above; `envctl rerun --yes` runs it",
        )
    if not click.confirm("run this command?", default=False, err=True):
        raise EnvdError(f"run {run.id}: not rerun (declined)")


def _compare_dict(reply: pb.CompareRunsReply) -> dict[str, Any]:
    return {"identical": reply.identical, "total": reply.total, "differing": list(reply.differing)}


def _run_again(
    obj: AppContext, project: str, command: list[str], directory: str
) -> tuple[int, str]:
    """`enter PROJECT -- COMMAND` from `directory`, where the run ran (the project's root for
    a run recorded before envd kept it); (exit status, the new run's id)."""
    from cli.entering import run_via_grpc
    from envd.errors import NotFound

    where = directory or "/"
    if not os.path.isdir(where):  # (the Enter call maps the caller's folder into /workspace)
        raise NotFound(
            f"cannot run in {directory}: no such folder here",
            hint="the run ran there: check out the code it used, then rerun",
        )
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    return run_via_grpc(obj.paths, project, command, os.path.realpath(where), tty=tty)


@click.command("new")
@click.argument("name")
@click.option(
    "--template",
    "-t",
    default="default",
    show_default=True,
    help="default, sklearn, pytorch-cpu or jupyter.",
)
@click.option(
    "--dir", "directory", type=click.Path(file_okay=False), help="Where (default ./NAME)."
)
@click.pass_obj
def new_cmd(obj: AppContext, name: str, template: str, directory: str | None) -> None:
    """Create a whole project NAME (code, params, tests, envd.yaml with `runs:`) and register it."""
    from envd.v1 import envd_pb2 as pb

    target = os.path.abspath(directory or name)
    reply = obj.client().new_project(
        pb.NewProjectRequest(name=name, template=template, directory=target)
    )
    if obj.as_json:
        emit_json(reply)
        return
    p = reply.project
    click.echo(f"created {p.path} (project `{p.name}`, package `{reply.package}`)")
    click.echo("next:")
    click.echo(f"  cd {os.path.relpath(p.path)} && git init && git add -A && git commit -m start")
    click.echo(f"  envctl lock {p.name}                         # pin every dependency")
    click.echo(f"  envctl enter {p.name} -- python -m {reply.package}.train   # a recorded run")
    click.echo(f"  envctl enter {p.name} -- python -m pytest                  # its tests")
    click.echo(f"  envctl runs {p.name}                         # params and metrics, run by run")
    click.echo(f"  envctl trace {os.path.relpath(p.path)}/models/model.json  # what made it")
