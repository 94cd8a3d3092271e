"""The daemon's client: connects to its socket, starts it when needed, maps errors back.

This is the only CLI module that imports grpc, and it is imported only by commands that talk
to the daemon.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from envd.errors import ERRORS_BY_KIND, EXIT_BUG, DaemonUnavailable, EnvdError
from envd.paths import Paths
from envd.v1 import envd_pb2_grpc

START_TIMEOUT_S = 20.0


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


def start_daemon(paths: Paths) -> None:
    """Start `envd serve` detached, and wait until its socket answers."""
    paths.logs.mkdir(parents=True, exist_ok=True)
    out = paths.logs / "daemon.out"
    with open(out, "ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "envd.daemon.serve", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
            env={**os.environ, "ENVD_HOME": str(paths.home), "ENVD_SOCKET": str(paths.socket)},
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if socket_answers(paths.socket):
            return
        if proc.poll() is not None and not socket_answers(paths.socket):
            time.sleep(0.2)  # another envctl may have started one at the same moment
            if socket_answers(paths.socket):
                return
            tail = _tail(out)
            raise DaemonUnavailable(
                f"the envd daemon failed to start (exit {proc.returncode}): {tail}",
                hint=f"see {paths.log_file} and {out}",
            )
        time.sleep(0.05)
    raise DaemonUnavailable(
        f"the envd daemon did not answer on {paths.socket} within {START_TIMEOUT_S:.0f}s",
        hint=f"see {paths.log_file}",
    )


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def connect(paths: Paths, start: bool = True) -> Client:
    if not socket_answers(paths.socket):
        if not start:
            raise DaemonUnavailable(
                f"the envd daemon is not running (no answer on {paths.socket})",
                hint="any envctl command starts it, e.g. `envctl daemon status`",
            )
        start_daemon(paths)
    return Client(paths)


def to_error(exc: grpc.RpcError, paths: Paths) -> EnvdError:
    """Rebuild the daemon's error from the status and trailing metadata."""
    meta = {str(m.key): str(m.value) for m in (exc.trailing_metadata() or ())}
    kind = str(meta.get("envd-kind", ""))
    message = exc.details() or str(exc.code())
    hint = str(meta.get("envd-hint", "")) or None
    if kind == "bug":
        return InternalDaemonError(message, hint=f"the daemon's log is {paths.log_file}")
    if kind in ERRORS_BY_KIND:
        cls = ERRORS_BY_KIND[kind]
        err = cls.__new__(cls)  # keep the class (and so its meaning); the message is final text
        EnvdError.__init__(err, message, hint=hint)
        if "envd-exit" in meta:
            err.exit_code = int(meta["envd-exit"])
        return err
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return DaemonUnavailable(
            f"lost the connection to the envd daemon ({exc.details()})",
            hint=f"see {paths.log_file}; `envctl daemon status` restarts it",
        )
    return EnvdError(f"the daemon answered {exc.code().name}: {message}")


class Client:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.channel = grpc.insecure_channel(
            f"unix:{paths.socket}", options=[("grpc.enable_http_proxy", 0)]
        )
        self.stub = envd_pb2_grpc.EnvdStub(self.channel)  # type: ignore[no-untyped-call]

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise to_error(exc, self.paths) from None

    def stream(self, method: str, request: Any) -> Iterator[Any]:
        try:
            yield from getattr(self.stub, method)(request)
        except grpc.RpcError as exc:
            raise to_error(exc, self.paths) from None

    def close(self) -> None:
        self.channel.close()
