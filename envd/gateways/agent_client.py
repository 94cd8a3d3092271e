"""The host side of the envd agent (envd/agent/agent.py, whose docstring is the protocol).

`run_in_agent` hands the caller's own stdin/stdout/stderr to the agent in a warm container, which
runs the command on them directly; the returned `AgentCommand` forwards signals and window-size
changes and waits for the exit status. Closing it before the command ends hangs the command up.

A terminal never enters the container: each of those fds that is a terminal is swapped for a
pipe, copied to and from the terminal by a thread here (`TerminalRelay`) until the command ends
(code in the container could otherwise keep reading it after envctl returned, or inject input).
Pipes and files, the fast path for data, are handed over as they are.

The container side: mount AGENT_SCRIPT read-only and make `python3 -I -S AGENT_SCRIPT SOCKET` the
container's command, as the caller's uid, with SOCKET in a 0700 directory bind-mounted from the
host. SOCKET appears once the agent accepts connections.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from envd.agent.agent import (
    BACKLOG,
    CHUNK,
    Frame,
    close,
    encode,
    read_chunk,
    take_frames,
    write_chunk,
)
from envd.errors import ContainerError

_DRAIN_LIMIT = 16 * CHUNK  # output still copied once the command has ended (leftovers write)
_RELAY_JOIN_S = 10.0  # a terminal stopped with Ctrl-S holds the last write at most this long
CONNECT_TIMEOUT_S = 5.0
AGENT_SCRIPT = Path(__file__).resolve().parent.parent / "agent" / "agent.py"  # stdlib only


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on fd, or None."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return (size.lines, size.columns) if size.lines and size.columns else None


class _Connection:
    """Frames over one connected socket: sends from any thread, reads from one."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self._buf = bytearray()
        self._frames: list[Frame] = []  # read, not returned yet
        self._send_lock = threading.Lock()

    def send(self, message: Frame, fds: Sequence[int] = ()) -> None:
        data = encode(message)
        with self._send_lock:
            sent = socket.send_fds(self.sock, [data], list(fds)) if fds else 0
            if sent < len(data):  # (a send of nothing fails once the agent has hung up)
                self.sock.sendall(data[sent:])

    def read(self, deadline: float | None) -> Frame:
        """The next frame; TimeoutError at deadline (monotonic), ContainerError at EOF."""
        while not self._frames:
            if deadline is not None:
                left = deadline - time.monotonic()
                if not select.select([self.sock], [], [], max(0.0, left))[0]:
                    raise TimeoutError("the command is still running")
            try:
                data = self.sock.recv(CHUNK)
            except OSError as e:
                raise ContainerError(f"the envd agent at {self.where} went away: {e}") from e
            if not data:
                raise ContainerError(f"the envd agent at {self.where} closed the connection")
            self._buf += data
            try:
                self._frames += take_frames(self._buf)
            except ValueError as e:
                raise ContainerError(f"the envd agent at {self.where} sent a bad frame: {e}") from e
        return self._frames.pop(0)


class _Copy:
    """One direction of a relay: src to dst through a bounded buffer (-1: closed)."""

    def __init__(self, src: int, dst: int) -> None:
        self.src = src
        self.dst = dst
        self.buf = bytearray()


class TerminalRelay:
    """The caller's terminals stay on this side: the agent gets pipes, copied here by a thread.

    A terminal stdin becomes a pipe that what is typed is written into; a terminal stdout or
    stderr a pipe copied onto the terminal (one pipe for both when they are the same terminal,
    so their order holds). `finish()` when the command has ended: the terminal is no longer
    read, the output already in the pipes is copied, and every pipe is closed, so a process left
    behind in the container reads EOF and writes into a closed pipe from then on.
    """

    def __init__(self, fds: tuple[int, int, int]) -> None:
        self.handed = list(fds)  # what the agent gets
        self._theirs: list[int] = []  # our pipes' ends in `handed`: closed here once sent
        self._copies: list[_Copy] = []
        self._input: _Copy | None = None  # the terminal to the command's stdin
        self._lock = threading.Lock()  # _stopping, and the end of the thread's fds
        self._stopping = False
        self._done = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        try:
            outputs: dict[tuple[int, int], int] = {}
            for i, fd in enumerate(fds):
                if not os.isatty(fd):
                    continue
                if i == 0:
                    r, w = os.pipe()
                    self._theirs.append(r)
                    os.set_blocking(w, False)
                    self._input = _Copy(os.dup(fd), w)
                    self._copies.append(self._input)
                    self.handed[0] = r
                    continue
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                if key not in outputs:
                    r, w = os.pipe()
                    self._theirs.append(w)
                    os.set_blocking(r, False)
                    self._copies.append(_Copy(r, os.dup(fd)))
                    outputs[key] = w
                self.handed[i] = outputs[key]
        except OSError:
            self._close_all()
            raise

    @staticmethod
    def needed(fds: Sequence[int]) -> bool:
        return any(os.isatty(fd) for fd in fds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="terminal-relay", daemon=True)
        self._thread.start()

    def sent(self) -> None:
        """The agent holds its ends now (or never will): ours go, so EOF and EPIPE come."""
        for fd in self._theirs:
            close(fd)
        self._theirs = []

    def finish(self) -> None:
        """The command has ended: copy the output that is there, close the pipes, return."""
        with self._lock:
            if self._stopping or self._done:
                return
            self._stopping = True
            if self._thread is None:
                self._close_all()
                return
            os.write(self._wake_w, b"x")
        # (a terminal stopped with Ctrl-S holds the last write: the thread closes all after it)
        self._thread.join(_RELAY_JOIN_S)

    def _run(self) -> None:
        try:
            while not self._stopping:
                poller = select.poll()
                poller.register(self._wake_r, select.POLLIN)
                for copy in self._copies:
                    if copy.src >= 0 and len(copy.buf) < BACKLOG:
                        poller.register(copy.src, select.POLLIN)
                    if copy.dst >= 0 and copy.buf:
                        poller.register(copy.dst, select.POLLOUT)
                for fd, _ in poller.poll():
                    for copy in self._copies:
                        if fd == copy.src:
                            self._read(copy)
                        elif fd == copy.dst:
                            self._write(copy)
                for copy in self._copies:
                    if copy.src < 0 and not copy.buf:
                        copy.dst = close(copy.dst)  # EOF passed on
            self._drain()
        finally:
            with self._lock:
                self._close_all()

    def _read(self, copy: _Copy) -> None:
        data = read_chunk(copy.src)
        if data:
            copy.buf += data
        elif data is not None:  # (EIO: the terminal went away)
            copy.src = close(copy.src)

    def _write(self, copy: _Copy) -> None:
        if not write_chunk(copy.dst, copy.buf):  # the command closed its stdin, or the
            copy.buf.clear()  # terminal went away
            copy.dst = close(copy.dst)
            copy.src = close(copy.src)

    def _drain(self) -> None:
        """What the command wrote before it ended is in the pipes: onto the terminal with it."""
        for copy in self._copies:
            if copy is self._input:
                continue
            budget = _DRAIN_LIMIT  # a leftover process may go on writing: not for ever
            while copy.dst >= 0:
                if not copy.buf:
                    if copy.src < 0 or budget <= 0:
                        break
                    try:
                        data = os.read(copy.src, CHUNK)
                    except OSError:  # BlockingIOError: nothing more there now
                        break
                    if not data:
                        break
                    budget -= len(data)
                    copy.buf += data
                try:
                    del copy.buf[: os.write(copy.dst, copy.buf)]
                except OSError:
                    break

    def _close_all(self) -> None:
        if self._done:
            return
        self._done = True
        for copy in self._copies:
            copy.src = close(copy.src)
            copy.dst = close(copy.dst)
        self.sent()
        close(self._wake_r)
        close(self._wake_w)


class AgentCommand:
    """A command the agent runs. `pid` is its pid in the container (None if it never started)."""

    def __init__(
        self, connection: _Connection, first: Frame, relay: TerminalRelay | None = None
    ) -> None:
        self._connection = connection
        self._relay = relay
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
            try:
                frame = self._connection.read(deadline)
            except ContainerError:
                self._end_relay()  # the container died: its pipes are closed
                raise
            if frame.get("op") == "exit":
                self._on_exit(frame)
        return self.returncode

    def close(self) -> None:
        """Forget the command; if it still runs, the agent hangs it up (SIGHUP, then SIGKILL)."""
        self._end_relay()
        if not self._closed:
            self._closed = True
            self._connection.sock.close()

    def _end_relay(self) -> None:
        if self._relay is not None:
            self._relay.finish()

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
        self.close()  # (a terminal gets the output the command wrote before its exit)


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
    Those that are terminals never reach the agent: it gets pipes, relayed here (TerminalRelay).
    """
    if not argv:
        raise ValueError("argv is empty")
    if tty and winsize is None:
        winsize = window_size(fds[0])
    connection = _connect(os.fspath(socket_path), connect_timeout)
    request: Frame = {
        "op": "run",
        "argv": list(argv),
        "cwd": cwd,
        "env": dict(env),
        "tty": tty,
        "winsize": list(winsize) if winsize else None,
    }
    relay: TerminalRelay | None = None
    try:
        if TerminalRelay.needed(fds):
            relay = TerminalRelay(fds)
            relay.start()
        try:
            connection.send(request, relay.handed if relay is not None else fds)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent refused the request before reading it all: its reply says why
        finally:
            if relay is not None:
                relay.sent()
        first = connection.read(time.monotonic() + connect_timeout)
        return AgentCommand(connection, first, relay)
    except (OSError, TimeoutError) as e:
        connection.sock.close()
        if relay is not None:
            relay.finish()
        raise ContainerError(f"the envd agent at {connection.where} did not start it: {e}") from e
    except BaseException:
        connection.sock.close()
        if relay is not None:
            relay.finish()
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
