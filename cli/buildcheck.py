"""`envctl build [P]` when the image is up to date: answered on the daemon's enter socket
(envd/model/buildcheck.py), before click, grpc or protobuf are imported. Anything else (a
build with work to do, an error to say, no daemon yet) goes on to the click command."""

from __future__ import annotations

from cli.plain import echo


def build_fast(args: list[str]) -> bool:
    """`envctl build [P]` when the image is up to date, over the daemon's enter socket (no
    click, no grpc: envd/model/buildcheck.py), printing what the gRPC path prints then. False
    when the socket does not answer, or a build has work to do or something to say: the
    caller then builds over gRPC (which starts the daemon, builds, or says why not)."""
    if args[:1] != ["build"] or len(args) > 2:
        return False
    if len(args) == 2 and args[1].startswith("-"):
        return False  # an option (`--dry-run`, `--json`, `--help`): click's
    from cli.entering import answered, engine_named
    from cli.refs import project_ref
    from envd.model.buildcheck import build_check_request, up_to_date_image

    request = build_check_request(project_ref(args[1] if len(args) == 2 else None), engine_named())
    answer = answered(request, up_to_date_image)
    if answer is None:  # a build to run, or an error gRPC says as every build's
        return False
    image, environment_hash = answer
    echo(f"{image} is up to date")
    if environment_hash:
        echo(f"environment {environment_hash}")
    return True
