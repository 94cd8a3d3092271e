"""The enter socket's "build-check" request: `envctl build P` answered without gRPC when the
image is up to date (nothing to lock, run or pull), as `envctl ps` is by the "list" request.

    CLI -> daemon   {"op": "build-check", "project": REF, "engine": [DOCKER_HOST, DOCKER_CONTEXT]}
    daemon -> CLI   {"op": "up-to-date", "image": TAG, "image_id": ID, "environment_hash": H}
                    or {"op": "build-needed"}: the CLI builds over gRPC (which says why)
                    or {"op": "error", "message": ..., "hint": ..., "exit_code": N}

The daemon reads envd.yaml, envd.lock and the steps' files afresh for each request (never a
remembered answer), so an edit is always seen. A daemon that does not know the request calls
it a bad enter request (exit 2), and the CLI builds over gRPC then too.

Pure, and cheap to import: the CLI's build path loads neither typing, json, click nor grpc.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's build milliseconds
if TYPE_CHECKING:
    from typing import Any

BUILD_CHECK = "build-check"
UP_TO_DATE = "up-to-date"
BUILD_NEEDED = "build-needed"
FIELDS = ("image", "image_id", "environment_hash")


def build_check_request(project: str, engine: list[str]) -> dict[str, Any]:
    """The CLI's one frame: which project (a name or an absolute path), and which engine its
    environment names."""
    return {"op": BUILD_CHECK, "project": project, "engine": engine}


def up_to_date_reply(image: str, image_id: str, environment_hash: str) -> dict[str, Any]:
    return {
        "op": UP_TO_DATE,
        "image": image,
        "image_id": image_id,
        "environment_hash": environment_hash,
    }


def build_needed_reply() -> dict[str, Any]:
    return {"op": BUILD_NEEDED}


def up_to_date_image(reply: dict[str, Any]) -> tuple[str, str] | None:
    """(image, environment hash) of an "up-to-date" reply; None for "build-needed".

    ValueError when the reply is neither (the CLI then builds over gRPC).
    """
    op = reply.get("op")
    if op == BUILD_NEEDED:
        return None
    if op != UP_TO_DATE:
        raise ValueError(f"not a build-check reply: {op!r}")
    if not all(isinstance(reply.get(k), str) for k in FIELDS) or not reply["image"]:
        raise ValueError(f"an up-to-date reply names its image, ID and hash: {reply!r}")
    return reply["image"], reply["environment_hash"]
