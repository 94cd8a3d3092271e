"""The daemon's client: connects to its socket, starts it when needed, maps errors back.

This is the only CLI module that imports grpc, and it is imported only by commands that talk
to the daemon. `Client` has one typed method per RPC of proto/envd/v1/envd.proto (snake_case),
so mypy checks requests and replies across the socket.

Errors travel in trailing metadata (see envd/daemon/interceptor.py): `envd-kind` and
`envd-exit` are ASCII; the message and hint travel as UTF-8 in `envd-message-bin` and
`envd-hint-bin`, since plain metadata values must be ASCII and a path may not be.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from envd.errors import ERRORS_BY_KIND, EXIT_BUG, DaemonUnavailable, EnvdError
from envd.paths import (
    ENGINE_VARIABLES,
    FILE_MODE,
    HOME_MODE,
    OTHER_SOCKET,
    Paths,
    socket_problem,
    unusable_path,
)
from envd.v1 import envd_pb2 as pb
from envd.v1 import envd_pb2_grpc

START_TIMEOUT_S = 20.0

_Reply = TypeVar("_Reply", bound=Message)


class InternalDaemonError(EnvdError):
    exit_code = EXIT_BUG
    kind = "bug"


def socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2.0)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def check_socket(path: Path) -> None:
    """Refuse a socket path that is not a socket, or is another user's (StateError, exit 11):
    envctl must neither talk to a stranger's daemon nor start one that would replace it."""
    try:
        info = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there yet: the daemon makes it (or says why it cannot)
    except OSError as exc:
        raise unusable_path(path, exc, path.parent, OTHER_SOCKET) from exc
    problem = socket_problem(path, info.st_mode, info.st_uid, os.geteuid())
    if problem is not None:
        raise problem


def _open_daemon_out(paths: Paths) -> int:
    """$ENVD_HOME (0700) and logs/daemon.out (0600), where the daemon's first words go."""
    out = paths.logs / "daemon.out"
    try:
        paths.home.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
        paths.logs.mkdir(exist_ok=True, mode=HOME_MODE)
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise unusable_path(Path(exc.filename or out), exc, paths.home) from exc
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, FILE_MODE)
    return fd


def _daemon_env(paths: Paths) -> dict[str, str]:
    """The daemon's environment: ours, its home and socket, and its allocator (so it need not
    start itself again to get it)."""
    from envd.allocator import allocator_env  # ctypes: only when a daemon is started

    env = {**os.environ, "ENVD_HOME": str(paths.home), "ENVD_SOCKET": str(paths.socket)}
    return allocator_env(env) or env


def start_daemon(paths: Paths) -> None:
    """Start `envd serve` detached, and wait until its socket answers."""
    out = paths.logs / "daemon.out"
    with os.fdopen(_open_daemon_out(paths), "ab") as sink:
        since = os.fstat(sink.fileno()).st_size  # what this start writes, not earlier ones
        proc = subprocess.Popen(
            [sys.executable, "-m", "envd.daemon.serve", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            env=_daemon_env(paths),
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if socket_answers(paths.socket):
            return
        if proc.poll() is not None and not socket_answers(paths.socket):
            time.sleep(0.2)  # another envctl may have started one at the same moment
            if socket_answers(paths.socket):
                return
            said = _daemon_error(out, since)
            if said is not None:  # the daemon said why: its own words and hint
                message, hint = said
                details = f"details in {paths.log_file} and {out}"
                raise DaemonUnavailable(
                    f"the envd daemon cannot start: {message}",
                    hint=f"{hint}; {details}" if hint else details,
                )
            tail = _tail(out, since)
            raise DaemonUnavailable(
                f"the envd daemon failed to start (exit {proc.returncode}): {tail}",
                hint=f"see {paths.log_file} and {out}",
            )
        time.sleep(0.05)
    raise DaemonUnavailable(
        f"the envd daemon did not answer on {paths.socket} within {START_TIMEOUT_S:.0f}s",
        hint=f"see {paths.log_file}",
    )


def _daemon_error(path: Path, since: int) -> tuple[str, str] | None:
    """(message, hint) of the `envd: error: ...` a failed start printed, if it did."""
    lines = _tail(path, since, lines=50).split(" | ")
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("envd: error: "):
            message = lines[i].removeprefix("envd: error: ")
            following = lines[i + 1] if i + 1 < len(lines) else ""
            return message, following.removeprefix("hint: ") if following.startswith(
                "hint: "
            ) else ""
    return None


def _tail(path: Path, since: int = 0, lines: int = 3) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def connect(paths: Paths, start: bool = True) -> Client:
    check_socket(paths.socket)
    if not socket_answers(paths.socket):
        if not start:
            raise DaemonUnavailable(
                f"the envd daemon is not running (no answer on {paths.socket})",
                hint="any envctl command starts it, e.g. `envctl daemon status`",
            )
        start_daemon(paths)
    return Client(paths)


def _metadata_text(meta: dict[str, str | bytes], key: str) -> str:
    """A text value: `KEY-bin` (UTF-8 bytes) when present, else the ASCII `KEY`."""
    value = meta.get(f"{key}-bin")
    if value is None:
        value = meta.get(key, "")
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def to_error(exc: grpc.RpcError, paths: Paths) -> EnvdError:
    """Rebuild the daemon's error from the status and trailing metadata."""
    meta: dict[str, str | bytes] = {str(m.key): m.value for m in (exc.trailing_metadata() or ())}
    kind = _metadata_text(meta, "envd-kind")
    message = _metadata_text(meta, "envd-message") or exc.details() or str(exc.code())
    hint = _metadata_text(meta, "envd-hint") or None
    if kind == "bug":
        return InternalDaemonError(message, hint=f"the daemon's log is {paths.log_file}")
    if kind in ERRORS_BY_KIND:
        cls = ERRORS_BY_KIND[kind]
        err = cls.__new__(cls)  # keep the class (and so its meaning); the message is final text
        EnvdError.__init__(err, message, hint=hint)
        exit_code = _metadata_text(meta, "envd-exit")
        if exit_code.isdigit():
            err.exit_code = int(exit_code)
        return err
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return DaemonUnavailable(
            f"lost the connection to the envd daemon ({exc.details()})",
            hint=f"see {paths.log_file}; `envctl daemon status` restarts it",
        )
    return EnvdError(f"the daemon answered {exc.code().name}: {message}")


class Client:
    """The daemon's API: one method per RPC, with the request and reply types of envd_pb2."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.channel = grpc.insecure_channel(
            f"unix:{paths.socket}", options=[("grpc.enable_http_proxy", 0)]
        )
        self.stub = envd_pb2_grpc.EnvdStub(self.channel)  # type: ignore[no-untyped-call]
        # Which engine our environment names: the daemon refuses a call meant for another.
        choice = "\0".join(os.environ.get(name, "") for name in ENGINE_VARIABLES)
        self._metadata = (("envd-engine-bin", choice.encode("utf-8", errors="surrogateescape")),)

    def close(self) -> None:
        self.channel.close()

    def _unary(
        self,
        method: Callable[..., Any],
        request: Message,
        reply_type: type[_Reply],
        timeout: float | None,
    ) -> _Reply:
        try:
            reply = method(request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise to_error(exc, self.paths) from None
        if not isinstance(reply, reply_type):
            raise TypeError(f"the daemon sent {type(reply).__name__}, not {reply_type.__name__}")
        return reply

    def _stream(
        self,
        method: Callable[..., Any],
        request: Message,
        event_type: type[_Reply],
        timeout: float | None,
    ) -> Iterator[_Reply]:
        try:
            for event in method(request, timeout=timeout, metadata=self._metadata):
                if not isinstance(event, event_type):
                    raise TypeError(
                        f"the daemon sent {type(event).__name__}, not {event_type.__name__}"
                    )
                yield event
        except grpc.RpcError as exc:
            raise to_error(exc, self.paths) from None

    def status(self, request: pb.StatusRequest, *, timeout: float | None = None) -> pb.StatusReply:
        return self._unary(self.stub.Status, request, pb.StatusReply, timeout)

    def shutdown(
        self, request: pb.ShutdownRequest, *, timeout: float | None = None
    ) -> pb.ShutdownReply:
        return self._unary(self.stub.Shutdown, request, pb.ShutdownReply, timeout)

    def add_project(
        self, request: pb.AddProjectRequest, *, timeout: float | None = None
    ) -> pb.Project:
        return self._unary(self.stub.AddProject, request, pb.Project, timeout)

    def list_projects(
        self, request: pb.ListProjectsRequest, *, timeout: float | None = None
    ) -> pb.ListProjectsReply:
        return self._unary(self.stub.ListProjects, request, pb.ListProjectsReply, timeout)

    def remove_project(
        self, request: pb.ProjectRef, *, timeout: float | None = None
    ) -> pb.RemoveProjectReply:
        return self._unary(self.stub.RemoveProject, request, pb.RemoveProjectReply, timeout)

    def init_project(
        self, request: pb.InitProjectRequest, *, timeout: float | None = None
    ) -> pb.InitProjectReply:
        return self._unary(self.stub.InitProject, request, pb.InitProjectReply, timeout)

    def list_templates(
        self, request: pb.ListTemplatesRequest, *, timeout: float | None = None
    ) -> pb.ListTemplatesReply:
        return self._unary(self.stub.ListTemplates, request, pb.ListTemplatesReply, timeout)

    def validate(self, request: pb.ProjectRef, *, timeout: float | None = None) -> pb.ValidateReply:
        return self._unary(self.stub.Validate, request, pb.ValidateReply, timeout)

    def project_status(
        self, request: pb.ProjectRef, *, timeout: float | None = None
    ) -> pb.ProjectStatusReply:
        return self._unary(self.stub.ProjectStatus, request, pb.ProjectStatusReply, timeout)

    def lock(
        self, request: pb.LockRequest, *, timeout: float | None = None
    ) -> Iterator[pb.LockEvent]:
        return self._stream(self.stub.Lock, request, pb.LockEvent, timeout)

    def build(
        self, request: pb.BuildRequest, *, timeout: float | None = None
    ) -> Iterator[pb.BuildEvent]:
        return self._stream(self.stub.Build, request, pb.BuildEvent, timeout)

    def export_dockerfile(
        self, request: pb.ProjectRef, *, timeout: float | None = None
    ) -> pb.ExportDockerfileReply:
        return self._unary(self.stub.ExportDockerfile, request, pb.ExportDockerfileReply, timeout)

    def export_pylock(
        self, request: pb.ProjectRef, *, timeout: float | None = None
    ) -> pb.ExportPylockReply:
        return self._unary(self.stub.ExportPylock, request, pb.ExportPylockReply, timeout)

    def export_sbom(
        self, request: pb.ExportSbomRequest, *, timeout: float | None = None
    ) -> pb.ExportSbomReply:
        return self._unary(self.stub.ExportSbom, request, pb.ExportSbomReply, timeout)

    def export_devcontainer(
        self, request: pb.ProjectRef, *, timeout: float | None = None
    ) -> pb.ExportDevcontainerReply:
        return self._unary(
            self.stub.ExportDevcontainer, request, pb.ExportDevcontainerReply, timeout
        )

    def list_images(
        self, request: pb.ListImagesRequest, *, timeout: float | None = None
    ) -> pb.ListImagesReply:
        return self._unary(self.stub.ListImages, request, pb.ListImagesReply, timeout)

    def gc(self, request: pb.GcRequest, *, timeout: float | None = None) -> pb.GcReply:
        return self._unary(self.stub.Gc, request, pb.GcReply, timeout)

    def remove_image(
        self, request: pb.RemoveImageRequest, *, timeout: float | None = None
    ) -> pb.RemoveImageReply:
        return self._unary(self.stub.RemoveImage, request, pb.RemoveImageReply, timeout)

    def enter(
        self, request: pb.EnterRequest, *, timeout: float | None = None
    ) -> Iterator[pb.EnterEvent]:
        return self._stream(self.stub.Enter, request, pb.EnterEvent, timeout)

    def finish_run(
        self, request: pb.FinishRunRequest, *, timeout: float | None = None
    ) -> pb.FinishRunReply:
        return self._unary(self.stub.FinishRun, request, pb.FinishRunReply, timeout)

    def list_containers(
        self, request: pb.ListContainersRequest, *, timeout: float | None = None
    ) -> pb.ListContainersReply:
        return self._unary(self.stub.ListContainers, request, pb.ListContainersReply, timeout)

    def stop(self, request: pb.StopRequest, *, timeout: float | None = None) -> pb.StopReply:
        return self._unary(self.stub.Stop, request, pb.StopReply, timeout)

    def host_info(
        self, request: pb.HostInfoRequest, *, timeout: float | None = None
    ) -> pb.HostInfoReply:
        return self._unary(self.stub.HostInfo, request, pb.HostInfoReply, timeout)

    def get_fingerprint(
        self, request: pb.FingerprintRequest, *, timeout: float | None = None
    ) -> pb.Fingerprint:
        return self._unary(self.stub.GetFingerprint, request, pb.Fingerprint, timeout)

    def diff(self, request: pb.DiffRequest, *, timeout: float | None = None) -> pb.DiffReply:
        return self._unary(self.stub.Diff, request, pb.DiffReply, timeout)

    def verify(self, request: pb.ProjectRef, *, timeout: float | None = None) -> pb.VerifyReply:
        return self._unary(self.stub.Verify, request, pb.VerifyReply, timeout)

    def list_runs(
        self, request: pb.ListRunsRequest, *, timeout: float | None = None
    ) -> pb.ListRunsReply:
        return self._unary(self.stub.ListRuns, request, pb.ListRunsReply, timeout)

    def get_run(self, request: pb.GetRunRequest, *, timeout: float | None = None) -> pb.RunRecord:
        return self._unary(self.stub.GetRun, request, pb.RunRecord, timeout)

    def diff_runs(
        self, request: pb.DiffRunsRequest, *, timeout: float | None = None
    ) -> pb.DiffRunsReply:
        return self._unary(self.stub.DiffRuns, request, pb.DiffRunsReply, timeout)

    def trace(self, request: pb.TraceRequest, *, timeout: float | None = None) -> pb.TraceReply:
        return self._unary(self.stub.Trace, request, pb.TraceReply, timeout)

    def export_run(
        self, request: pb.ExportRunRequest, *, timeout: float | None = None
    ) -> pb.ExportRunReply:
        return self._unary(self.stub.ExportRun, request, pb.ExportRunReply, timeout)

    def import_run(
        self, request: pb.ImportRunRequest, *, timeout: float | None = None
    ) -> pb.ImportRunReply:
        return self._unary(self.stub.ImportRun, request, pb.ImportRunReply, timeout)

    def check_rerun(
        self, request: pb.CheckRerunRequest, *, timeout: float | None = None
    ) -> pb.CheckRerunReply:
        return self._unary(self.stub.CheckRerun, request, pb.CheckRerunReply, timeout)

    def compare_runs(
        self, request: pb.CompareRunsRequest, *, timeout: float | None = None
    ) -> pb.CompareRunsReply:
        return self._unary(self.stub.CompareRuns, request, pb.CompareRunsReply, timeout)

    def new_project(
        self, request: pb.NewProjectRequest, *, timeout: float | None = None
    ) -> pb.NewProjectReply:
        return self._unary(self.stub.NewProject, request, pb.NewProjectReply, timeout)

    def share(
        self, request: pb.ShareRequest, *, timeout: float | None = None
    ) -> Iterator[pb.ShareEvent]:
        return self._stream(self.stub.Share, request, pb.ShareEvent, timeout)

    def pull(
        self, request: pb.PullRequest, *, timeout: float | None = None
    ) -> Iterator[pb.PullEvent]:
        return self._stream(self.stub.Pull, request, pb.PullEvent, timeout)

    def load(
        self, request: pb.LoadRequest, *, timeout: float | None = None
    ) -> Iterator[pb.PullEvent]:
        return self._stream(self.stub.Load, request, pb.PullEvent, timeout)

    def share_run(
        self, request: pb.ShareRunRequest, *, timeout: float | None = None
    ) -> Iterator[pb.ShareRunEvent]:
        return self._stream(self.stub.ShareRun, request, pb.ShareRunEvent, timeout)

    def pull_run(
        self, request: pb.PullRunRequest, *, timeout: float | None = None
    ) -> Iterator[pb.PullRunEvent]:
        return self._stream(self.stub.PullRun, request, pb.PullRunEvent, timeout)

    def list_shared_runs(
        self, request: pb.ListSharedRunsRequest, *, timeout: float | None = None
    ) -> pb.ListSharedRunsReply:
        return self._unary(self.stub.ListSharedRuns, request, pb.ListSharedRunsReply, timeout)

    def events(
        self, request: pb.EventsRequest, *, timeout: float | None = None
    ) -> Iterator[pb.DaemonEvent]:
        return self._stream(self.stub.Events, request, pb.DaemonEvent, timeout)

    def get_config(
        self, request: pb.GetConfigRequest, *, timeout: float | None = None
    ) -> pb.GetConfigReply:
        return self._unary(self.stub.GetConfig, request, pb.GetConfigReply, timeout)

    def set_config(
        self, request: pb.SetConfigRequest, *, timeout: float | None = None
    ) -> pb.GetConfigReply:
        return self._unary(self.stub.SetConfig, request, pb.GetConfigReply, timeout)
