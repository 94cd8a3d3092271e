"""`envctl share image P --to REF` when the registry holds P's image already: answered on the
daemon's enter socket (envd/model/sharecheck.py), before click, grpc or protobuf are imported.
Anything else (a push with layers to move, --pin, --output, --json, an error to say, no daemon
yet) goes on to the click command."""

from __future__ import annotations

import sys

from cli.plain import echo


def share_args(args: list[str]) -> tuple[str, str] | None:
    """(project, to) of exactly `share image P --to REF` (or `--to=REF`, before or after P);
    None for any other shape, which click parses."""
    if args[:2] != ["share", "image"]:
        return None
    rest, project, to = args[2:], None, None
    while rest:
        word = rest.pop(0)
        if word == "--to" and rest and to is None:
            to = rest.pop(0)
        elif word.startswith("--to=") and to is None:
            to = word[len("--to=") :]
        elif word.startswith("-") or project is not None:
            return None  # another option (--pin, -o, --help), or a second argument
        else:
            project = word
    if not project or not to:
        return None
    return project, to


def share_fast(args: list[str]) -> bool:
    """`envctl share image P --to REF` with nothing to push, over the daemon's enter socket,
    printing what the gRPC path prints then. False when the socket does not answer, or the
    share has layers to move or something to say: the caller then shares over gRPC."""
    parsed = share_args(args)
    if parsed is None:
        return False
    from cli.entering import answered, engine_named
    from cli.refs import project_ref
    from envd.model.sharecheck import already_shared, share_check_request

    project, to = parsed
    request = share_check_request(project_ref(project), to, engine_named())
    answer = answered(request, already_shared)
    if answer is None:  # layers to push, or an error gRPC says as every share's
        return False
    reference, skipped, said = answer
    if not sys.stderr.isatty():  # (on a terminal the gRPC path's status line is gone by now)
        for line in said:
            sys.stderr.write(f"[push] {line}\n")
    echo(reference)
    sys.stdout.flush()
    sys.stderr.write(f"layers: 0 pushed, {skipped} already there\n")
    return True
