"""The everyday commands without click: `envctl --help`, `ps`, `ls`, `images`, `status [P]`.

What these print is what the click commands print (they call the same functions below); the
hot path (cli/main.py) sends a plain invocation here and anything else (an option, `--help`
after the command, a typo) to click, which owns usage errors. Each imports only what it
prints: the daemon's client (grpc and the message stubs) and cli/output.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from cli.output import ago, echo, emit_json, human_bytes, table
from cli.refs import project_ref

if TYPE_CHECKING:
    from cli.client import Client
    from cli.context import AppContext

STATE_NAMES = {
    0: "unknown",
    1: "new",
    2: "ready",
    3: "stale",
    4: "building",
    5: "invalid",
    6: "missing",
    7: "failed",
}

PLAIN = ("ps", "ls", "images")  # commands that take no argument


def print_ps(client: Client, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.list_containers(pb.ListContainersRequest())
    if as_json:
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


def print_ls(client: Client, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.list_projects(pb.ListProjectsRequest())
    if as_json:
        emit_json(reply)
        return
    if not reply.projects:
        echo("no projects yet: `envctl init DIR` or `envctl add DIR`")
        return
    table(
        ["name", "state", "image", "path", "reason"],
        [
            (p.name, STATE_NAMES.get(p.state, "?"), p.image or "-", p.path, p.state_reason)
            for p in reply.projects
        ],
    )


def print_images(client: Client, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.list_images(pb.ListImagesRequest())
    if as_json:
        emit_json(reply)
        return
    table(
        ["image", "kind", "project", "size", "last used", "in use"],
        [
            (
                i.image,
                i.kind,
                i.project or "-",
                human_bytes(i.size_bytes),
                ago(i.last_used_at),
                "yes" if i.in_use else "no",
            )
            for i in reply.images
        ],
    )


def print_status(client: Client, project: str | None, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.project_status(pb.ProjectRef(ref=project_ref(project)))
    if as_json:
        emit_json(reply)
        return
    p = reply.project
    echo(f"{p.name}: {STATE_NAMES.get(p.state, '?')}  ({p.path})")
    if p.state_reason:
        echo(f"  reason: {p.state_reason}")
    echo(f"  lock:   {reply.lock_path if reply.lock_exists else 'none (run envctl lock)'}")
    for reason in reply.stale_reasons:
        echo(f"    - {reason}")
    echo(f"  image:  {p.image or 'none'}")
    for note in reply.host_notes:
        echo(f"  host:   {note}")
    for c in reply.containers:
        echo(f"  warm:   {c.container_id[:12]} {c.status}, last used {ago(c.last_used_at)}")


def plain_call(args: list[str]) -> tuple[str, list[str], bool] | None:
    """(command, its arguments, --json) when `args` is a plain everyday invocation, else None
    (click handles it): `[--json] ps|ls|images`, `[--json] status [PROJECT]`."""
    as_json = args[:1] == ["--json"]
    rest = args[1:] if as_json else args
    if not rest:
        return None
    command, params = rest[0], rest[1:]
    if any(p.startswith("-") for p in params):
        return None
    if command in PLAIN and not params:
        return command, params, as_json
    if command == "status" and len(params) <= 1:
        return command, params, as_json
    return None


def run(obj: AppContext, command: str, params: list[str]) -> None:
    client = obj.client()
    if command == "ps":
        print_ps(client, obj.as_json)
    elif command == "ls":
        print_ls(client, obj.as_json)
    elif command == "images":
        print_images(client, obj.as_json)
    else:
        print_status(client, params[0] if params else None, obj.as_json)


def main_fast(args: list[str]) -> int | None:
    """Run a plain everyday invocation and return its exit code; None: not one (use click).

    Failures end as cli.errors.run_cli ends them: the error's message, hint and exit code.
    """
    call = plain_call(args)
    if call is None:
        return None
    command, params, as_json = call
    from cli.context import AppContext
    from envd.errors import EXIT_INTERRUPTED, EnvdError

    try:
        run(AppContext(as_json=as_json), command, params)
        sys.stdout.flush()
    except EnvdError as exc:
        sys.stderr.write(f"envctl: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # stdout closed early (`envctl ls | head`)
        sys.stderr.close()
        return 0
    except Exception:
        from cli.errors import crash_report

        return crash_report()
    return 0
