"""envctl fingerprint, diff, verify (runs: cli/commands/runs.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.output import emit_json
from cli.refs import project_ref

if TYPE_CHECKING:
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
    for p in e.python_packages:
        click.echo(f"  {p.name}=={p.version}")
    click.echo(f"debian packages ({len(e.debian_packages)}):")
    click.echo("  " + " ".join(f"{p.name}={p.version}" for p in e.debian_packages))
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
    from envd.model.fingerprint import FingerprintDiff, format_diff
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
        click.echo(format_diff(diff, reply.a_label, reply.b_label), nl=False)
    return 0 if reply.identical else 1


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
