"""gRPC servicer: converts protobuf messages to calls on App and back, nothing more.

Errors are not handled here: the ErrorInterceptor maps the error root to status codes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from envd.app import App
from envd.events import Event
from envd.gateways.engine import EngineInfo
from envd.progress import Progress, Reporter
from envd.store import ProjectRow
from envd.v1 import envd_pb2 as pb
from envd.v1 import envd_pb2_grpc

T = TypeVar("T")

_STATES = {
    "new": pb.PROJECT_STATE_NEW,
    "ready": pb.PROJECT_STATE_READY,
    "stale": pb.PROJECT_STATE_STALE,
    "building": pb.PROJECT_STATE_BUILDING,
    "invalid": pb.PROJECT_STATE_INVALID,
    "missing": pb.PROJECT_STATE_MISSING,
    "failed": pb.PROJECT_STATE_FAILED,
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


class Servicer(envd_pb2_grpc.EnvdServicer):
    def __init__(self, app: App, shutdown: Callable[[], None]) -> None:
        self.app = app
        self._shutdown = shutdown

    # ------------------------------------------------------------ daemon

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        s = self.app.status()
        return pb.StatusReply(
            version=s.version,
            uptime_s=s.uptime_s,
            socket_path=s.socket_path,
            pid=s.pid,
            home=s.home,
            log_path=s.log_path,
            engine=engine_msg(s.engine),
            projects=s.projects,
        )

    def Shutdown(
        self, request: pb.ShutdownRequest, context: grpc.ServicerContext
    ) -> pb.ShutdownReply:
        threading.Thread(target=self._shutdown, daemon=True).start()
        return pb.ShutdownReply()

    # ------------------------------------------------------------ projects

    def AddProject(
        self, request: pb.AddProjectRequest, context: grpc.ServicerContext
    ) -> pb.Project:
        from pathlib import Path

        return project_msg(self.app.projects.add(Path(request.path)))

    def ListProjects(
        self, request: pb.ListProjectsRequest, context: grpc.ServicerContext
    ) -> pb.ListProjectsReply:
        return pb.ListProjectsReply(projects=[project_msg(r) for r in self.app.projects.list()])

    def RemoveProject(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.RemoveProjectReply:
        return pb.RemoveProjectReply(project=project_msg(self.app.projects.remove(request.ref)))

    def InitProject(
        self, request: pb.InitProjectRequest, context: grpc.ServicerContext
    ) -> pb.Project:
        from pathlib import Path

        return project_msg(self.app.projects.init(Path(request.directory), request.template))

    def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.ServicerContext
    ) -> pb.ListTemplatesReply:
        from envd.templates import list_templates

        return pb.ListTemplatesReply(
            templates=[
                pb.Template(name=t.name, description=t.description) for t in list_templates()
            ]
        )

    def Validate(self, request: pb.ProjectRef, context: grpc.ServicerContext) -> pb.ValidateReply:
        row = self.app.projects.resolve(request.ref)
        self.app.projects.spec(row)
        from envd.spec import SPEC_FILENAME

        return pb.ValidateReply(project=project_msg(row), spec_path=f"{row.path}/{SPEC_FILENAME}")

    # ------------------------------------------------------------ events and config

    def Events(
        self, request: pb.EventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DaemonEvent]:
        for event in self.app.events.subscribe(is_active=context.is_active):
            if not request.project or event.project == request.project:
                yield event_msg(event)

    def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigReply:
        return self._config_reply()

    def SetConfig(
        self, request: pb.SetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigReply:
        self.app.set_config(request.key, request.value)
        return self._config_reply()

    def _config_reply(self) -> pb.GetConfigReply:
        return pb.GetConfigReply(
            entries=[
                pb.ConfigEntry(key=k, value=v, description=d)
                for k, v, d in self.app.config.entries()
            ]
        )
