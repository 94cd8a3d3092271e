"""envctl enter, ps, stop.

`enter` is the hot path: it asks the daemon for an exec target, then runs the `docker` client
itself so the terminal, pipes and exit status belong to the user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import click

from cli.context import AppContext
from cli.output import ProgressDisplay, ago, emit_json, table
from cli.refs import project_ref

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _target(obj: AppContext, ref: str, command: tuple[str, ...], gpus: str, tty: bool) -> Any:
    from envd.v1 import envd_pb2 as pb

    request = pb.EnterRequest(
        project=pb.ProjectRef(ref=ref),
        command=list(command),
        gpus=gpus,
        tty=tty,
        cwd=os.getcwd(),
        uid=os.getuid(),
        gid=os.getgid(),
        user_name=_user_name(),
    )
    display: ProgressDisplay | None = None
    try:
        for event in obj.client().stream("Enter", request):
            if event.HasField("target"):
                return event.target
            display = display or ProgressDisplay()
            display.update(event.progress)
    finally:
        if display is not None:
            display.close()
    raise click.ClickException("the daemon sent no exec target")


def _user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"user{os.getuid()}"


def exec_argv(target: Any, interactive_tty: bool) -> list[str]:
    argv = ["docker", "exec", "-i"]
    if interactive_tty:
        argv.append("-t")
    argv += ["-u", target.user, "-w", target.workdir]
    for key, value in sorted(target.env.items()):
        argv += ["-e", f"{key}={value}"]
    return [*argv, target.container_id, *target.argv]


def _forward_signals(target: Any) -> None:
    """Without a TTY, `docker exec` does not pass signals on: send them to the command."""

    def forward(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name.removeprefix("SIG")
        pid_file = f"/tmp/.envd-run-{target.run_id}.pid"
        subprocess.run(
            ["docker", "exec", target.container_id, "sh", "-c", f"kill -{name} $(cat {pid_file})"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    for sig in FORWARDED:
        signal.signal(sig, forward)


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
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    target = _target(obj, project_ref(project), command, gpus, tty)
    argv = exec_argv(target, tty)
    if command and not tty:
        _forward_signals(target)
        # Keep the terminal's Ctrl-C for us (we forward it) when stdin is not the terminal.
        proc = subprocess.Popen(argv, start_new_session=not sys.stdin.isatty())
    else:
        proc = subprocess.Popen(argv)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # with a TTY, Ctrl-C went to the command itself; wait for it to end
    if target.run_id:
        from envd.v1 import envd_pb2 as pb

        obj.client().call("FinishRun", pb.FinishRunRequest(run_id=target.run_id, exit_code=code))
    return code if code >= 0 else 128 - code


@click.command("ps")
@click.pass_obj
def ps_cmd(obj: AppContext) -> None:
    """List warm environments."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().call("ListContainers", pb.ListContainersRequest())
    if obj.as_json:
        emit_json(reply)
        return
    table(
        ["project", "container", "image", "since", "last used", "status"],
        [
            (
                c.project,
                c.container_id[:12],
                c.image,
                ago(c.started_at),
                ago(c.last_used_at),
                c.status,
            )
            for c in reply.containers
        ],
    )


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
    reply = obj.client().call("Stop", request)
    if obj.as_json:
        emit_json(reply)
        return
    for c in reply.stopped:
        click.echo(f"stopped {c.project} ({c.container_id[:12]})")
    if not reply.stopped:
        click.echo("nothing was running")
