"""envctl share run RUN --to REGISTRY/REPO, envctl pull run REF [PROJECT] (issue 26)."""

from __future__ import annotations

import getpass
import os
import subprocess

import click

from cli.context import AppContext
from cli.output import emit_json, follow, message_dict
from cli.refs import project_ref

LONG_TIMEOUT_S = 6 * 3600.0  # a run's data can be large


def who(configured: str = "") -> str:
    """Who shares: $ENVD_USER, else the name set with `envctl config user NAME`
    (`configured`), else git's global user.name, else the login name."""
    name = os.environ.get("ENVD_USER", "").strip() or configured.strip()
    if name:
        return name
    try:
        out = subprocess.run(
            ["git", "config", "--global", "--get", "user.name"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd="/",
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if out:
        return out
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


@click.command("run")
@click.argument("run_id")
@click.option("--to", "to", required=True, help="REGISTRY/REPO; the run is tagged by its id.")
@click.pass_obj
def share_run(obj: AppContext, run_id: str, to: str) -> None:
    """Push run RUN_ID as one OCI artifact: its record, params, metrics, data and outputs,
    with its environment image as the subject. Files already there are not sent again.

    Prints REGISTRY/REPO:RUN_ID, what a colleague gives `envctl pull run`.
    """
    from envd.v1 import envd_pb2 as pb

    client = obj.client()
    settings = client.get_config(pb.GetConfigRequest()).entries
    configured = next((e.value for e in settings if e.key == "user"), "")
    request = pb.ShareRunRequest(run=run_id, to=to, shared_by=who(configured))
    result = follow(client.share_run(request, timeout=LONG_TIMEOUT_S), obj.as_json)
    if obj.as_json:
        emit_json({"result": message_dict(result)})
        return
    click.echo(result.reference)
    click.echo(
        f"files: {result.files_uploaded} uploaded ({_size(result.bytes_uploaded)}), "
        f"{result.files_skipped} already there"
        + (f", {result.files_mounted} mounted" if result.files_mounted else "")
        + f"; environment {result.subject}",
        err=True,
    )
    for note in result.notes:
        click.echo(f"note: {note}", err=True)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@click.command("run")
@click.argument("reference")
@click.argument("project", required=False)
@click.option("--force", is_flag=True, help="Replace local files that differ from the run's.")
@click.pass_obj
def pull_run(obj: AppContext, reference: str, project: str | None, force: bool) -> None:
    """Fetch a shared run into PROJECT (default: the current directory): params, data,
    outputs and metrics checked against their digests before anything is written, the
    environment pulled by digest and verified, and the run recorded as imported.

    A local file that differs is kept and named (--force replaces it).
    """
    from envd.v1 import envd_pb2 as pb

    ref = project_ref(project) if project else os.getcwd()
    request = pb.PullRunRequest(reference=reference, project=pb.ProjectRef(ref=ref), force=force)
    result = follow(obj.client().pull_run(request, timeout=LONG_TIMEOUT_S), obj.as_json)
    if obj.as_json:
        emit_json({"result": message_dict(result)})
        return
    run = result.run
    verb = "imported" if result.added else "already recorded:"
    click.echo(f"{verb} run {run.id} from {reference} into {result.project}")
    click.echo(f"environment {result.environment_hash} verified ({result.image})")
    if result.placed:
        click.echo(f"placed: {', '.join(result.placed)}")
    if result.unchanged:
        click.echo(f"already identical: {', '.join(result.unchanged)}")
    for path in result.kept:
        click.echo(f"kept yours: {path} differs from the run's (--force replaces it)")
    if run.git_commit and result.commit == run.git_commit:
        click.echo(f"the checkout is at the run's commit {run.git_commit[:12]}")
    elif run.git_commit:
        click.echo(
            f"the checkout is at {result.commit[:12] or 'no commit'}, the run's commit is "
            f"{run.git_commit[:12]}: `git checkout {run.git_commit[:12]}` to rerun it as it ran"
        )
    click.echo(f"next: envctl rerun {run.id} --yes   # the command was chosen by whoever shared it")


class PullGroup(click.Group):
    """`pull REFERENCE` pulls an image (cli.commands.share); `pull run REF` pulls a run."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] == "run":
            return "run", pull_run, args[1:]
        from cli.commands.share import pull_cmd as pull_image

        return "pull", pull_image, args

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "REFERENCE | run REF [PROJECT] [--force]")


@click.group("pull", cls=PullGroup, invoke_without_command=False)
def pull_cmd() -> None:
    """Pull a shared image (`pull REGISTRY/REPO@sha256:...`), verified against its
    fingerprint, or a shared run (`pull run REGISTRY/REPO:RUN [PROJECT]`)."""


pull_cmd.add_command(pull_run)
