"""envctl daemon status|start|stop|logs, envctl events, envctl config."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import click

from cli.context import AppContext
from cli.output import emit_json, table


@click.group("daemon")
def daemon_cmd() -> None:
    """Manage the envd daemon (it starts by itself when needed)."""


@daemon_cmd.command("status")
@click.pass_obj
def daemon_status(obj: AppContext) -> None:
    """Show the daemon and the Docker engine it uses (starts the daemon if needed)."""
    from envd.v1 import envd_pb2 as pb

    reply = obj.client().status(pb.StatusRequest(), timeout=30)
    if obj.as_json:
        emit_json(reply)
        return
    engine = reply.engine
    click.echo(f"envd {reply.version}, pid {reply.pid}, up {reply.uptime_s:.0f}s")
    click.echo(f"  socket:   {reply.socket_path}")
    click.echo(f"  state:    {reply.home}")
    click.echo(f"  log:      {reply.log_path}")
    click.echo(f"  projects: {reply.projects}")
    if engine.reachable:
        runtimes = ", ".join(engine.runtimes)
        click.echo(
            f"  engine:   Docker {engine.version} (API {engine.api_version}; runtimes {runtimes})"
        )
    else:
        click.echo(f"  engine:   unreachable: {engine.error}")


@daemon_cmd.command("start")
@click.pass_obj
def daemon_start(obj: AppContext) -> None:
    """Start the daemon in the background if it is not running."""
    obj.client()
    click.echo(f"envd is running on {obj.paths.socket}")


STATUS_TIMEOUT_S = 3.0  # a daemon that cannot say its pid in this time is hung
STOP_GRACE_S = 10.0  # after Shutdown, how long the daemon may take before SIGTERM
TERM_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
KILL_WAIT_S = 5.0


@daemon_cmd.command("stop")
@click.pass_obj
def daemon_stop(obj: AppContext) -> None:
    """Stop the daemon (warm containers keep running and are found again on restart).

    Says "stopped" only once the process has exited: it is asked to shut down, then sent
    SIGTERM, then SIGKILL, each after a bounded wait."""
    from cli.client import check_socket, socket_answers
    from envd.errors import DaemonUnavailable, EnvdError
    from envd.v1 import envd_pb2 as pb

    check_socket(obj.paths.socket)
    grace = STOP_GRACE_S
    if not socket_answers(obj.paths.socket):
        pid = _pid(obj)
        if pid and _alive(pid) and _is_envd(pid):
            click.echo(f"envd (pid {pid}) does not answer on {obj.paths.socket}; stopping it")
            grace = 0.0  # it cannot be asked: straight to SIGTERM
        else:
            click.echo("envd is not running")
            return
    else:
        client = obj.client(start=False)
        try:
            pid = int(client.status(pb.StatusRequest(), timeout=STATUS_TIMEOUT_S).pid)
        except EnvdError:  # the socket accepts, but the daemon does not answer: hung
            pid = _pid(obj)
            if pid and _alive(pid) and _is_envd(pid):
                click.echo(f"envd (pid {pid}) does not answer; stopping it")
                grace = 0.0
        if grace:
            try:
                client.shutdown(pb.ShutdownRequest(), timeout=10)
            except EnvdError:
                pass  # it may be gone before it answers
    if not pid:  # no pid to wait for: the socket going away is all there is
        if not _wait(lambda: not socket_answers(obj.paths.socket), STOP_GRACE_S):
            raise DaemonUnavailable(
                f"envd still answers on {obj.paths.socket} and its pid is unknown",
                hint=f"find it with `fuser {obj.paths.socket}` and stop it",
            )
        click.echo("envd stopped")
        return
    if _wait(lambda: not _alive(pid), grace):
        click.echo("envd stopped")
        return
    if not _is_envd(pid):
        click.echo("envd stopped")  # the pid now names another process: envd is gone
        return
    if grace:
        click.echo(f"envd (pid {pid}) did not exit within {grace:.0f}s; sending SIGTERM")
    _signal(pid, signal.SIGTERM)
    if _wait(lambda: not _alive(pid), TERM_GRACE_S):
        click.echo("envd stopped")
        return
    _signal(pid, signal.SIGKILL)
    if not _wait(lambda: not _alive(pid), KILL_WAIT_S):
        raise DaemonUnavailable(
            f"envd (pid {pid}) is still running after SIGKILL",
            hint=f"it may be stuck in the kernel (state D); see `cat /proc/{pid}/status`",
        )
    click.echo(f"envd killed (SIGKILL, pid {pid}): it did not exit after SIGTERM")


def _wait(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _is_envd(pid: int) -> bool:
    """Whether the pid is an envd daemon (and not a process that reused a dead one's pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(b"envd" in part for part in argv) and b"serve" in argv


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pid(obj: AppContext) -> int:
    try:
        return int(obj.paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0


@daemon_cmd.command("logs")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.pass_obj
def daemon_logs(obj: AppContext, lines: int, follow: bool) -> None:
    """Print the daemon's log."""
    path = obj.paths.log_file
    if not path.exists():
        click.echo(f"no log yet at {path}")
        return
    with open(path, errors="replace") as f:
        for line in f.readlines()[-lines:]:
            click.echo(line.rstrip("\n"))
        while follow:
            line = f.readline()
            if line:
                click.echo(line.rstrip("\n"))
            else:
                time.sleep(0.2)


@click.command("events")
@click.option("--project", "-p", default="", help="Only this project's events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def events_cmd(obj: AppContext, project: str, as_json: bool) -> None:
    """Stream what the daemon does: builds, stale projects, containers, runs."""
    import json

    from cli.output import message_dict
    from envd.v1 import envd_pb2 as pb

    for event in obj.client().events(pb.EventsRequest(project=project)):
        if as_json or obj.as_json:
            click.echo(json.dumps(message_dict(event), sort_keys=True), nl=True)
        else:
            when = time.strftime("%H:%M:%S", time.localtime(event.time))
            who = f" {event.project}" if event.project else ""
            extra = " ".join(f"{k}={v}" for k, v in sorted(event.fields.items()))
            click.echo(f"{when} {event.kind}{who}: {event.message} {extra}".rstrip())


@click.command("config")
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option(
    "--project",
    "-p",
    default="",
    help="Set KEY for this project only (`cache`: its own build cache, or `off`; an empty "
    "VALUE removes the override).",
)
@click.pass_obj
def config_cmd(obj: AppContext, key: str | None, value: str | None, project: str) -> None:
    """Show settings, or set KEY to VALUE (stored in $ENVD_HOME/config.yaml).

    `envctl config cache REGISTRY/REPO` shares build steps through a registry (a team build
    cache); `envctl config cache ''` turns it off."""
    from envd.v1 import envd_pb2 as pb

    if project:
        if key != "cache":
            raise click.UsageError("--project applies to `cache` only")
        key = f"cache[{project}]"
    client = obj.client()
    if key and value is not None:
        reply = client.set_config(pb.SetConfigRequest(key=key, value=value))
    else:
        reply = client.get_config(pb.GetConfigRequest())
    if project:  # (the daemon names the override by the project's name, a path given or not)
        entries = [e for e in reply.entries if e.key == "cache" or e.key.startswith("cache[")]
    else:
        entries = [e for e in reply.entries if not key or e.key == key]
    if key and not entries:
        raise click.UsageError(f"unknown setting {key!r}")
    if obj.as_json:
        emit_json({e.key: e.value for e in entries})
    else:
        table(["key", "value", "meaning"], [(e.key, e.value, e.description) for e in entries])
