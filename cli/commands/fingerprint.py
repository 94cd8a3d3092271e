"""envctl fingerprint, diff, verify (runs: cli/commands/runs.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.output import echo_items, emit_json, layout, on_terminal, terminal_width
from cli.refs import project_ref

if TYPE_CHECKING:
    from envd.model.fingerprint import Change, FingerprintDiff
    from envd.v1 import envd_pb2 as pb

_RUN_ID = re.compile(r"^(run:)?[0-9a-f]{6,12}$")


def subject(text: str) -> pb.Subject:
    """A fingerprint file, `run:ID`, an image (name:tag or sha256:...), or a project."""
    from envd.v1 import envd_pb2 as pb

    if Path(text).is_file():
        return pb.Subject(file=os.path.abspath(text))
    if text.startswith("run:") or (_RUN_ID.match(text) and not Path(text).exists()):
        return pb.Subject(run_id=text.removeprefix("run:"))
    if text.startswith("sha256:") or (":" in text and "/" in text and not Path(text).exists()):
        return pb.Subject(image=text)
    return pb.Subject(project=pb.ProjectRef(ref=project_ref(text)))


@click.command("fingerprint")
@click.argument("project", required=False)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the file here.")
@click.option("--json", "as_json", is_flag=True, help="The full fingerprint as JSON.")
@click.pass_obj
def fingerprint_cmd(
    obj: AppContext, project: str | None, output: str | None, as_json: bool
) -> None:
    """Print PROJECT's fingerprint: every package, hashed by section (or write it to a file)."""
    from envd.model.fingerprint import dumps
    from envd.v1 import envd_pb2 as pb
    from envd.wire import from_msg

    msg = obj.client().get_fingerprint(pb.FingerprintRequest(subject=subject(project or ".")))
    fp = from_msg(msg)
    if output:
        Path(output).write_text(dumps(fp))
        click.echo(f"wrote {output} (root {fp.root_hash})")
        return
    if as_json or obj.as_json:
        click.echo(dumps(fp), nl=False)
        return
    e, h = fp.environment, fp.host
    click.echo(f"root         {fp.root_hash}")
    click.echo(f"environment  {fp.environment_hash}")
    click.echo(f"host         {fp.host_hash}")
    click.echo(f"os           {e.os_release.get('PRETTY_NAME', '?')}, glibc {e.glibc}, {e.arch}")
    click.echo(f"python       {e.python_implementation} {e.python_version}")
    click.echo(f"base         {e.base_digest}")
    click.echo(f"content      {e.content_hash} ({e.files} files)")
    if e.env:
        click.echo("env          " + " ".join(f"{k}={v}" for k, v in sorted(e.env.items())))
    click.echo(f"python packages ({len(e.python_packages)}):")
    echo_items([f"{p.name}=={p.version}" for p in e.python_packages])
    click.echo(f"debian packages ({len(e.debian_packages)}):")
    echo_items([f"{p.name}={p.version}" for p in e.debian_packages])
    if e.cuda_libraries:
        click.echo("cuda: " + ", ".join(f"{p.name} {p.version}" for p in e.cuda_libraries))
    gpus = ", ".join(g.model for g in h.gpus) or "none"
    click.echo(
        f"host         {h.cpu_model} ({h.arch}), kernel {h.kernel}, Docker {h.engine_version}"
    )
    click.echo(f"gpus         {gpus}" + (f", driver {h.driver_version}" if h.gpus else ""))


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="The differences as JSON.")
@click.pass_obj
def diff_cmd(obj: AppContext, a: str, b: str, as_json: bool) -> int:
    """Name what differs between A and B (projects, fingerprint files, run IDs or images).

    Exits 0 when identical, 1 when anything differs.
    """
    from envd.model.fingerprint import FingerprintDiff
    from envd.v1 import envd_pb2 as pb
    from envd.wire import change_from_msg

    reply = obj.client().diff(pb.DiffRequest(a=subject(a), b=subject(b)))
    if as_json or obj.as_json:
        emit_json(reply)
    else:
        diff = FingerprintDiff(
            tuple(change_from_msg(c) for c in reply.changes),
            reply.environment_identical,
            reply.host_identical,
        )
        width = terminal_width() if on_terminal() else None
        for line in diff_lines(diff, reply.a_label, reply.b_label, width):
            click.echo(line)
    return 0 if reply.identical else 1


def diff_lines(diff: FingerprintDiff, a_label: str, b_label: str, width: int | None) -> list[str]:
    """A diff by section, then by field with counts; a field's packages one per line (width
    None), else in columns across the terminal's width."""
    if diff.identical:
        return [
            f"{a_label} and {b_label} are identical",
            "environment: identical",
            "host: identical",
        ]
    lines = [f"--- {a_label}", f"+++ {b_label}"]
    for section in ("environment", "host"):
        same = diff.environment_identical if section == "environment" else diff.host_identical
        items = [c for c in diff.changes if c.section == section]
        if same or not items:
            lines.append(f"{section}: identical")
            continue
        lines.append(f"{section}: {len(items)} difference(s)")
        fields: dict[str, list[Change]] = {}
        for c in items:
            fields.setdefault(c.field, []).append(c)
        for name, changes in fields.items():
            named = [c for c in changes if c.name]
            for c in changes:
                if not c.name:
                    lines.append(f"  {_mark(c.kind)} {name}: {_change_text(c)}")
            if not named:
                continue
            kinds = sorted({c.kind for c in named}, key=lambda k: (_ORDER.get(k, 9), k))
            counts = ", ".join(f"{sum(c.kind == k for c in named)} {k}" for k in kinds)
            lines.append(f"  {name} ({len(named)}: {counts}):")
            if name == "files":  # old: the package that owns the file, when known
                entries = [
                    f"{_mark(c.kind)} file {c.name}"
                    + (f" ({c.old})" if c.old else "")
                    + ("" if c.kind in ("added", "removed") else f" {c.kind}")
                    for c in named
                ]
                lines += [f"    {entry}" for entry in entries]  # paths: one per line
            else:
                entries = [f"{_mark(c.kind)} {c.name} {_change_text(c)}" for c in named]
                lines += layout(entries, width, 4)
    return lines


_MARK = {"added": "+", "removed": "-", "changed": "~"}
_ORDER = {"added": 0, "removed": 1, "changed": 2}


def _mark(kind: str) -> str:
    return _MARK.get(kind, "~")  # files may also be "modified", "mode" or "symlink"


def _change_text(c: Change) -> str:
    if c.kind == "added":
        return c.new
    if c.kind == "removed":
        return c.old
    return f"{c.old} -> {c.new}"


@click.command("verify")
@click.argument("project", required=False)
@click.pass_obj
def verify_cmd(obj: AppContext, project: str | None) -> int:
    """Check that PROJECT's image and warm container still match the recorded fingerprint."""
    from envd.errors import EXIT_VERIFY
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().verify(pb.ProjectRef(ref=project_ref(project)), timeout=300)
    if obj.as_json:
        emit_json(reply)
    elif reply.ok:
        click.echo(f"ok: {reply.checked} match the recorded fingerprint")
    else:
        click.echo(f"MISMATCH: {reply.checked} differ from the recorded fingerprint:")
        for c in reply.changes:
            what = f"{c.field}: {c.name}" if c.name else c.field
            click.echo(f"  {c.kind} {what} {c.old} -> {c.new}".rstrip(" ->"))
    return 0 if reply.ok else EXIT_VERIFY
