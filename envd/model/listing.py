"""The enter socket's read-only "list" request: what `envctl ps` asks without gRPC.

    CLI -> daemon   {"op": "list", "what": "containers", "engine": [DOCKER_HOST, DOCKER_CONTEXT]}
    daemon -> CLI   {"op": "containers", "containers": [ROW, ...]}
                    or {"op": "error", "message": ..., "hint": ..., "exit_code": N}

A ROW has exactly the fields of the gRPC WarmContainer message (envd/v1/envd.proto), so
`envctl --json ps` prints the same document on either path. The daemon answers from its
registry of warm containers (envd.services.warm: an agent that answers is a running container,
no engine call). Frames as the rest of the socket's (envd/daemon/enter_socket.py).

Pure, and cheap to import: the CLI's `ps` path loads neither typing nor json for it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's `ps` milliseconds
if TYPE_CHECKING:
    from typing import Any, TypedDict

    class WarmRow(TypedDict):
        """One warm container, as WarmContainer in envd.proto."""

        project: str
        container_id: str
        image: str
        started_at: float
        last_used_at: float
        status: str


LIST = "list"
CONTAINERS = "containers"
TEXT_FIELDS = ("project", "container_id", "image", "status")
TIME_FIELDS = ("started_at", "last_used_at")


def list_request(what: str, engine: list[str]) -> dict[str, Any]:
    """The CLI's one frame: what to list, and which engine its environment names."""
    return {"op": LIST, "what": what, "engine": engine}


def containers_reply(rows: list[WarmRow]) -> dict[str, Any]:
    return {"op": CONTAINERS, CONTAINERS: rows}


def warm_rows(reply: dict[str, Any]) -> list[WarmRow]:
    """The rows of a "containers" reply, each checked to have the fields and types of a row.

    ValueError when the reply is not one (the CLI then asks over gRPC).
    """
    if reply.get("op") != CONTAINERS or not isinstance(reply.get(CONTAINERS), list):
        raise ValueError(f"not a list of containers: {reply.get('op')!r}")
    rows: list[WarmRow] = []
    for item in reply[CONTAINERS]:
        if not isinstance(item, dict) or set(item) != {*TEXT_FIELDS, *TIME_FIELDS}:
            raise ValueError(f"not a warm container row: {item!r}")
        if not all(isinstance(item[k], str) for k in TEXT_FIELDS):
            raise ValueError(f"a row's {', '.join(TEXT_FIELDS)} are strings: {item!r}")
        times = [item[k] for k in TIME_FIELDS]
        if not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            raise ValueError(f"a row's {', '.join(TIME_FIELDS)} are numbers: {item!r}")
        rows.append(
            {
                "project": item["project"],
                "container_id": item["container_id"],
                "image": item["image"],
                "started_at": float(item["started_at"]),
                "last_used_at": float(item["last_used_at"]),
                "status": item["status"],
            }
        )
    return rows
