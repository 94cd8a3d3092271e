"""The host side of the envd agent (envd/agent/agent.py, whose docstring is the protocol).

`run_in_agent` hands the caller's own stdin/stdout/stderr to the agent in a warm container, which
runs the command on them directly; the returned `AgentCommand` forwards signals and window-size
changes and waits for the exit status. Closing it before the command ends hangs the command up.

The container side: mount AGENT_SCRIPT read-only and make `python3 -I -S AGENT_SCRIPT SOCKET` the
container's command, as the caller's uid, with SOCKET in a 0700 directory bind-mounted from the
host. SOCKET appears once the agent accepts connections.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from envd.errors import ContainerError

_HEADER = struct.Struct(">I")
_MAX_FRAME = 1 << 20
CONNECT_TIMEOUT_S = 5.0
AGENT_SCRIPT = Path(__file__).resolve().parent.parent / "agent" / "agent.py"  # stdlib only

Frame = dict[str, object]


def _encode(message: Frame) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(data)) + data


class _Connection:
    """Frames over one connected socket: sends from any thread, reads from one."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self._buf = bytearray()
        self._send_lock = threading.Lock()

    def send(self, message: Frame, fds: Sequence[int] = ()) -> None:
        data = _encode(message)
        with self._send_lock:
            sent = socket.send_fds(self.sock, [data], list(fds)) if fds else 0
            if sent < len(data):  # (a send of nothing fails once the agent has hung up)
                self.sock.sendall(data[sent:])

    def read(self, deadline: float | None) -> Frame:
        """The next frame; TimeoutError at deadline (monotonic), ContainerError at EOF."""
        while True:
            frame = self._take()
            if frame is not None:
                return frame
            if deadline is not None:
                left = deadline - time.monotonic()
                if not select.select([self.sock], [], [], max(0.0, left))[0]:
                    raise TimeoutError("the command is still running")
            try:
                data = self.sock.recv(1 << 16)
            except OSError as e:
                raise ContainerError(f"the envd agent at {self.where} went away: {e}") from e
            if not data:
                raise ContainerError(f"the envd agent at {self.where} closed the connection")
            self._buf += data

    def _take(self) -> Frame | None:
        if len(self._buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buf)
        if size > _MAX_FRAME:
            raise ContainerError(f"the envd agent at {self.where} sent a frame of {size} bytes")
        if len(self._buf) < _HEADER.size + size:
            return None
        body = bytes(self._buf[_HEADER.size : _HEADER.size + size])
        del self._buf[: _HEADER.size + size]
        try:
            message = json.loads(body)
        except ValueError as e:
            raise ContainerError(f"the envd agent at {self.where} sent {body!r}: {e}") from e
        if not isinstance(message, dict):
            raise ContainerError(f"the envd agent at {self.where} sent {message!r}")
        return message


class AgentCommand:
    """A command the agent runs. `pid` is its pid in the container (None if it never started)."""

    def __init__(self, connection: _Connection, first: Frame) -> None:
        self._connection = connection
        self._closed = False
        self.pid: int | None = None
        self.returncode: int | None = None
        self.signal: int | None = None  # the signal that ended it
        self.error: str | None = None  # why it could not be started (returncode 126 or 127)
        pid = first.get("pid")
        if first.get("op") == "started" and isinstance(pid, int):
            self.pid = pid
        else:
            self._on_exit(first)

    def __enter__(self) -> AgentCommand:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fileno(self) -> int:
        """Readable when the agent has something to say (for select in the caller's loop)."""
        return self._connection.sock.fileno()

    def send_signal(self, signum: int) -> None:
        """SIGINT, SIGTERM, SIGHUP or SIGQUIT to the command's process group (3rd SIGINT kills)."""
        self._control({"op": "signal", "signal": int(signum)})

    def hang_up(self) -> None:
        """SIGHUP now, SIGKILL after the agent's grace; unlike close(), wait() still works."""
        self._control({"op": "hangup"})

    def resize(self, rows: int, cols: int) -> None:
        """The caller's terminal changed size (tty mode)."""
        self._control({"op": "winsize", "rows": rows, "cols": cols})

    def poll(self) -> int | None:
        try:
            return self.wait(timeout=0)
        except TimeoutError:
            return None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (128+N when signal N ended it); TimeoutError if still running."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if self._closed:
                raise ContainerError("the connection to the envd agent is closed")
            frame = self._connection.read(deadline)
            if frame.get("op") == "exit":
                self._on_exit(frame)
        return self.returncode

    def close(self) -> None:
        """Forget the command; if it still runs, the agent hangs it up (SIGHUP, then SIGKILL)."""
        if not self._closed:
            self._closed = True
            self._connection.sock.close()

    def _control(self, message: Frame) -> None:
        if self.returncode is not None or self._closed:
            return
        try:
            self._connection.send(message)
        except OSError:  # the agent closed the connection: the exit status is on its way
            pass

    def _on_exit(self, frame: Frame) -> None:
        status, signum, error = frame.get("status"), frame.get("signal"), frame.get("error")
        if frame.get("op") != "exit" or not isinstance(status, int):
            raise ContainerError(f"the envd agent sent {frame!r}")
        self.returncode = status
        self.signal = signum if isinstance(signum, int) else None
        self.error = error if isinstance(error, str) else None
        self.close()


def _connect(socket_path: str, timeout: float) -> _Connection:
    """Connect, waiting up to timeout for an agent that is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return _Connection(sock, socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            if time.monotonic() >= deadline:
                raise ContainerError(
                    f"the envd agent at {socket_path} does not answer: {e.strerror}",
                    hint="the warm container may have stopped; `envctl stop` and enter again",
                ) from e
            time.sleep(0.01)
        except OSError as e:
            sock.close()
            raise ContainerError(f"cannot reach the envd agent at {socket_path}: {e}") from e


def run_in_agent(
    socket_path: str | os.PathLike[str],
    argv: Sequence[str],
    cwd: str,
    env: Mapping[str, str],
    fds: tuple[int, int, int] = (0, 1, 2),
    tty: bool = False,
    winsize: tuple[int, int] | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> AgentCommand:
    """Start argv in the agent on fds (the caller's stdin, stdout, stderr).

    With tty=True the command gets a pty of winsize (rows, cols; default: the size of the
    terminal on fds[0]); the caller puts its terminal in raw mode and restores it afterwards.
    A command that cannot start comes back already ended, with returncode 127 or 126 and error.
    fds stay open here: a daemon passing on a CLI's fds closes its copies once this returns, so
    that only the command and the CLI hold them (else its stdout never reaches EOF downstream).
    """
    if not argv:
        raise ValueError("argv is empty")
    connection = _connect(os.fspath(socket_path), connect_timeout)
    request: Frame = {
        "op": "run",
        "argv": list(argv),
        "cwd": cwd,
        "env": dict(env),
        "tty": tty,
        "winsize": list(winsize) if winsize else None,
    }
    try:
        try:
            connection.send(request, fds)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent refused the request before reading it all: its reply says why
        return AgentCommand(connection, connection.read(time.monotonic() + connect_timeout))
    except (OSError, TimeoutError) as e:
        connection.sock.close()
        raise ContainerError(f"the envd agent at {connection.where} did not start it: {e}") from e
    except BaseException:
        connection.sock.close()
        raise


def agent_answers(socket_path: str | os.PathLike[str]) -> bool:
    """Whether an agent listens there (so its container runs); it sees the probe close at once."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(socket_path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def running_commands(socket_path: str | os.PathLike[str], timeout: float = 2.0) -> list[int]:
    """The pids of the commands the agent runs now (an idle container has none)."""
    connection = _connect(os.fspath(socket_path), timeout)
    try:
        connection.send({"op": "status"})
        reply = connection.read(time.monotonic() + timeout)
    except (OSError, TimeoutError) as e:
        raise ContainerError(f"the envd agent at {connection.where} did not answer: {e}") from e
    finally:
        connection.sock.close()
    running = reply.get("running")
    if not isinstance(running, list):
        raise ContainerError(f"the envd agent sent {reply!r}")
    return [pid for pid in running if isinstance(pid, int)]
