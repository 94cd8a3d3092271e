"""The enter socket's "share-check" request: `envctl share image P --to REF` answered without
gRPC when the registry holds P's image already (nothing to push), as `envctl build P` is by
"build-check" when the image is up to date.

    CLI -> daemon   {"op": "share-check", "project": REF, "to": REGISTRY/REPO[:TAG],
                     "engine": [DOCKER_HOST, DOCKER_CONTEXT]}
    daemon -> CLI   {"op": "already-shared", "reference": NAME@DIGEST, "digest": DIGEST,
                     "layers_skipped": N, "said": [PROGRESS LINE, ...]}
                    or {"op": "share-needed"}: the CLI shares over gRPC (which pushes, or says
                    why it cannot)
                    or {"op": "error", "message": ..., "hint": ..., "exit_code": N}

"already-shared" is a share that has happened: the daemon asked the registry as every share
does (the manifest under the tag or the image's digest, and each blob it names), moved the tag
onto the image when it pointed elsewhere, and recorded the share. It moved no layer. "said"
holds the messages of its "push" progress step, which the CLI prints as the gRPC path does.

Pure, and cheap to import: the CLI's share path loads neither typing, json, click nor grpc.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's share milliseconds
if TYPE_CHECKING:
    from typing import Any

SHARE_CHECK = "share-check"
ALREADY_SHARED = "already-shared"
SHARE_NEEDED = "share-needed"


def share_check_request(project: str, to: str, engine: list[str]) -> dict[str, Any]:
    """The CLI's one frame: which project (a name or an absolute path), where to, and which
    engine its environment names."""
    return {"op": SHARE_CHECK, "project": project, "to": to, "engine": engine}


def already_shared_reply(
    reference: str, digest: str, layers_skipped: int, said: list[str]
) -> dict[str, Any]:
    return {
        "op": ALREADY_SHARED,
        "reference": reference,
        "digest": digest,
        "layers_skipped": layers_skipped,
        "said": said,
    }


def share_needed_reply() -> dict[str, Any]:
    return {"op": SHARE_NEEDED}


def already_shared(reply: dict[str, Any]) -> tuple[str, int, list[str]] | None:
    """(reference, layers already there, progress messages) of an "already-shared" reply; None
    for "share-needed".

    ValueError when the reply is neither (the CLI then shares over gRPC).
    """
    op = reply.get("op")
    if op == SHARE_NEEDED:
        return None
    if op != ALREADY_SHARED:
        raise ValueError(f"not a share-check reply: {op!r}")
    reference, skipped = reply.get("reference"), reply.get("layers_skipped")
    said = reply.get("said")
    if (
        not isinstance(reference, str)
        or "@sha256:" not in reference
        or not isinstance(reply.get("digest"), str)
        or type(skipped) is not int
        or skipped < 0
        or not isinstance(said, list)
        or not all(isinstance(line, str) for line in said)
    ):
        raise ValueError(f"an already-shared reply names its reference and layers: {reply!r}")
    return reference, skipped, said
