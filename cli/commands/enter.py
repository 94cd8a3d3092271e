"""envctl enter, ps, stop.

`enter` is the hot path: it asks the daemon for an exec target, then runs the `docker` client
itself so the terminal, pipes and exit status belong to the user.
"""

from __future__ import annotations

import click

from cli.context import AppContext
from cli.output import emit_json
from cli.refs import project_ref


@click.command("enter", context_settings={"ignore_unknown_options": True})
@click.argument("project")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--gpus", default="", help="GPUs to attach: `all` (default) or indexes, e.g. 0,1.")
@click.pass_obj
def enter_cmd(obj: AppContext, project: str, command: tuple[str, ...], gpus: str) -> int:
    """Open a login shell in PROJECT, or run `-- CMD ARGS...` and exit with its status.

    The project is mounted at /workspace. The first enter builds when needed; later ones
    reuse the warm container.
    """
    from cli.entering import enter

    return enter(obj.paths, project, list(command), gpus)


@click.command("stop")
@click.argument("project", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every warm environment.")
@click.pass_obj
def stop_cmd(obj: AppContext, project: str | None, stop_all: bool) -> None:
    """Stop PROJECT's warm environment (or --all)."""
    from envd.v1 import envd_pb2 as pb

    if not project and not stop_all:
        raise click.UsageError("name a PROJECT, or pass --all")
    request = pb.StopRequest(project=pb.ProjectRef(ref=project_ref(project)), all=stop_all)
    reply = obj.client().stop(request)
    if obj.as_json:
        emit_json(reply)
        return
    for c in reply.stopped:
        click.echo(f"stopped {c.project} ({c.container_id[:12]})")
    if not reply.stopped:
        click.echo("nothing was running")
