"""gRPC servicer mixins, one per concern; each only converts messages and calls App.

Errors are not handled here: the ErrorInterceptor maps the error root to status codes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from envd.daemon.wiring import Services
from envd.events import Event
from envd.gateways.engine import EngineInfo
from envd.gateways.store import ProjectRow
from envd.model.state import ProjectState
from envd.progress import Progress, Reporter
from envd.v1 import envd_pb2 as pb

T = TypeVar("T")

_STATES = {
    ProjectState.NEW: pb.PROJECT_STATE_NEW,
    ProjectState.READY: pb.PROJECT_STATE_READY,
    ProjectState.STALE: pb.PROJECT_STATE_STALE,
    ProjectState.BUILDING: pb.PROJECT_STATE_BUILDING,
    ProjectState.INVALID: pb.PROJECT_STATE_INVALID,
    ProjectState.MISSING: pb.PROJECT_STATE_MISSING,
    ProjectState.FAILED: pb.PROJECT_STATE_FAILED,
}


def project_msg(row: ProjectRow) -> pb.Project:
    return pb.Project(
        name=row.name,
        path=row.path,
        state=_STATES.get(row.state, pb.PROJECT_STATE_UNSPECIFIED),
        state_reason=row.state_reason,
        image=row.image,
        lock_hash=row.lock_hash,
        added_at=row.added_at,
    )


def engine_msg(info: EngineInfo) -> pb.EngineInfo:
    return pb.EngineInfo(
        reachable=info.reachable,
        version=info.version,
        api_version=info.api_version,
        error=info.error,
        runtimes=list(info.runtimes),
        nvidia_runtime=info.nvidia_runtime,
        host=info.host,
        context=info.context,
        remote=info.remote,
        engine_id=info.engine_id,
        os=info.os,
        arch=info.arch,
        name=info.name,
        nvidia_cdi=info.nvidia_cdi,
        product=info.product,
        image_store=info.image_store,
        rootless=info.rootless,
    )


def progress_msg(p: Progress) -> pb.Progress:
    return pb.Progress(
        step=p.step,
        message=p.message,
        current=p.current,
        total=p.total,
        elapsed_s=p.elapsed_s,
        log=p.log,
    )


def event_msg(e: Event) -> pb.DaemonEvent:
    return pb.DaemonEvent(
        time=e.time, kind=e.kind, project=e.project, message=e.message, fields=e.fields
    )


_DONE = object()


def streamed(
    work: Callable[[Reporter], T],
    on_progress: Callable[[pb.Progress], Any],
    on_result: Callable[[T], Any],
) -> Iterator[Any]:
    """Run `work` in a thread and yield its progress, then its result, as stream messages.

    If the client goes away the work still finishes (a build is shared and must not leave a
    half-made container); only the stream stops.
    """
    events: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work(events.put)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    threading.Thread(target=run, daemon=True, name="stream-work").start()
    while True:
        item = events.get()
        if item is _DONE:
            break
        yield on_progress(progress_msg(item))
    if "error" in outcome:
        raise outcome["error"]
    yield on_result(outcome["result"])


class RpcBase:
    """What every mixin may use."""

    services: Services
