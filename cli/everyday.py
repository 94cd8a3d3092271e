"""The everyday commands without click: `envctl --help`, `ps`, `ls`, `images`, `status [P]`.

What these print is what the click commands print (they call the same functions below); the
hot path (cli/main.py) sends a plain invocation here and anything else (an option, `--help`
after the command, a typo) to click, which owns usage errors. Each imports only what it
prints: the daemon's client (grpc and the message stubs) and cli/output.py. `ps` first asks
the daemon's enter socket (envd/model/listing.py: no grpc, no protobuf, no typing); when that
socket does not answer (no daemon yet, an older one) it asks over gRPC as the others do.
"""

from __future__ import annotations

import sys

from cli.plain import ago, echo, human_bytes, table
from cli.refs import project_ref

TYPE_CHECKING = False  # not typing's: importing typing costs `envctl ps` milliseconds
if TYPE_CHECKING:
    from cli.client import Client
    from cli.context import AppContext
    from envd.model.listing import WarmRow
    from envd.v1 import envd_pb2 as pb

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
PS_HEADERS = ["project", "container", "image", "since", "last used", "status"]


def print_ps(client: Client, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.list_containers(pb.ListContainersRequest())
    if as_json:
        from cli.output import emit_json

        emit_json(reply)
        return
    show_ps(rows_of(reply), as_json)


def rows_of(reply: pb.ListContainersReply) -> list[WarmRow]:
    """The gRPC reply's containers as the enter socket's rows (the same fields)."""
    return [
        {
            "project": c.project,
            "container_id": c.container_id,
            "image": c.image,
            "started_at": c.started_at,
            "last_used_at": c.last_used_at,
            "status": c.status,
        }
        for c in reply.containers
    ]


def show_ps(rows: list[WarmRow], as_json: bool) -> None:
    """`envctl ps` of these rows: the table, or (--json) the ListContainersReply document."""
    if as_json:
        import json

        echo(json.dumps({"containers": rows}, indent=2, sort_keys=True))
        return
    table(
        PS_HEADERS,
        [
            (
                r["project"],
                r["container_id"][:12],
                r["image"],
                ago(r["started_at"]),
                ago(r["last_used_at"]),
                r["status"],
            )
            for r in rows
        ],
    )


def ps_fast(as_json: bool) -> bool:
    """`envctl ps` over the daemon's enter socket; False when it does not answer there (the
    gRPC path then starts the daemon or says why it cannot). The daemon's refusal is raised."""
    from cli.entering import Refused, ask, engine_named, enter_socket_path
    from envd.model.listing import CONTAINERS, list_request, warm_rows

    try:
        rows = warm_rows(ask(enter_socket_path(), list_request(CONTAINERS, engine_named())))
    except (Refused, ValueError):
        return False
    show_ps(rows, as_json)
    return True


def print_ls(client: Client, as_json: bool) -> None:
    from envd.v1 import envd_pb2 as pb

    reply = client.list_projects(pb.ListProjectsRequest())
    if as_json:
        from cli.output import emit_json

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
        from cli.output import emit_json

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
        from cli.output import emit_json

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
    from envd.errors import EXIT_INTERRUPTED, EnvdError

    try:
        if command != "ps" or not ps_fast(as_json):
            from cli.context import AppContext

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
