"""The envd agent: a warm container's first process, running commands on the caller's own fds.

    python3 -I -S agent.py SOCKET [HANGUP_GRACE_S]

Stdlib only, any Python >= 3.9. It runs as the caller's uid and listens on SOCKET, inside a 0700
directory bind-mounted from the host: that directory is the access check. SOCKET appears once
connections are accepted, and goes when the agent stops. As PID 1 it reaps every child, orphans
included (elsewhere it makes itself a child subreaper to do the same). It writes no pid files:
a command lives as long as its connection, and SIGTERM ends the agent and them all.

One file on purpose: only this file is bind-mounted into the container (read-only, at
/run/envd/agent.py), and `-I` keeps its folder off sys.path, so it can import nothing beside it.
Its frame codec (encode, take_frames) is the daemon's too: on the enter socket and to agents.

Protocol: one Unix stream connection per command. Every message is a frame: a 4-byte big-endian
length, then that many bytes of a UTF-8 JSON object with an "op".

client -> agent
  {"op": "run", "argv": [...], "cwd": "/workspace", "env": {...}, "tty": false,
   "winsize": [rows, cols] or null}
      The first frame. Its bytes carry SCM_RIGHTS with exactly three fds: the caller's stdin,
      stdout and stderr. Without a tty the command gets them as its 0, 1, 2: nothing is copied.
      With a tty it gets a new pty as its controlling terminal (size from "winsize", else 24x80),
      and the agent relays stdin -> pty and pty -> stdout. The host never sends a terminal here
      (its side relays them through pipes, and sets its own terminal raw), and the agent is not
      dumpable: the commands, of its uid, can neither ptrace it nor open what it holds through
      /proc/<agent>/fd (that takes CAP_SYS_PTRACE).
  {"op": "signal", "signal": N}
      N is SIGINT, SIGTERM, SIGHUP or SIGQUIT; it goes to the command's process group (with a
      tty, the pty's foreground group). The third SIGINT is sent as SIGKILL.
  {"op": "winsize", "rows": R, "cols": C}
  {"op": "hangup"}
      The same hang-up as closing the connection (below), but the exit frame still comes: a
      daemon whose own caller went away records how the command ended.
  Closing the connection before the exit frame hangs the command up: SIGHUP to its process
  group, then SIGKILL HANGUP_GRACE_S (default 5) later if it still runs.
  {"op": "status"} instead of "run" (no fds): answered with {"op": "status", "running": [pid]}.

agent -> client
  {"op": "started", "pid": P}
      The command runs as P, the leader of a new session and process group.
  {"op": "exit", "status": S, "signal": N or null, "error": null or "..."}
      The last frame. S is the command's exit status, 128+N when signal N ended it. When it could
      not be started, "error" says why, S is 127 (not found) or 126, and no "started" came.
      With a tty it is sent once the pty's output has been relayed.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import termios
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NoReturn

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 20
CHUNK = 1 << 16
BACKLOG = 4 * CHUNK  # relay buffer per direction; beyond it the agent stops reading
DEFAULT_GRACE_S = 5.0
DRAIN_QUIET_S = 0.1  # with a tty: after the exit, output still comes until it is this quiet
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
KILL_AT_SIGINT = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RESET_SIGNALS = (*STOP_SIGNALS, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGQUIT)
Frame = dict[str, Any]  # one message (the daemon's enter socket and agent client use this codec)
READ = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36  # prctl(2) options


def log(message: str) -> None:
    print(f"envd-agent: {message}", file=sys.stderr, flush=True)


def encode(message: Frame) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(data)) + data


def take_frames(buf: bytearray) -> list[Frame]:
    """The complete frames at the start of buf, removed from it."""
    frames = []
    while len(buf) >= HEADER.size:
        (size,) = HEADER.unpack_from(buf)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes")
        if len(buf) < HEADER.size + size:
            break
        message = json.loads(bytes(buf[HEADER.size : HEADER.size + size]))
        del buf[: HEADER.size + size]
        if not isinstance(message, dict):
            raise ValueError("frame is not a JSON object")
        frames.append(message)
    return frames


def recv_with_fds(conn: socket.socket, fds: list[int]) -> bytes:
    """socket.recv_fds (3.9+) by hand: close-on-exec fds, and none leak when truncated."""
    space = socket.CMSG_SPACE(8 * array.array("i").itemsize)
    data, ancillary, flags, _ = conn.recvmsg(CHUNK, space, socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if flags & socket.MSG_CTRUNC:
        raise ValueError("too many fds")
    return data


def close(fd: int) -> int:
    if fd >= 0:
        with suppress(OSError):
            os.close(fd)
    return -1


def read_chunk(fd: int) -> bytes | None:
    """What fd has now: b"" at its end or on an error, None when a non-blocking fd has none."""
    try:
        return os.read(fd, CHUNK)
    except BlockingIOError:
        return None
    except OSError:  # EIO: a terminal or pty went away
        return b""


def write_chunk(fd: int, buf: bytearray) -> bool:
    """What fd takes now from buf (PIPE_BUF at most), removed from it; False once fd failed."""
    try:
        del buf[: os.write(fd, buf[: select.PIPE_BUF])]
    except BlockingIOError:
        pass
    except OSError:
        return False
    return True


def killpg(pgid: int, signum: int) -> None:
    with suppress(OSError):  # the group is gone already
        os.killpg(pgid, signum)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def parse_run(
    request: Frame,
) -> tuple[list[str], str, dict[str, str], bool, tuple[int, int] | None]:
    argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env")
    winsize, tty = request.get("winsize"), request.get("tty") is True
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError("env must map strings to strings")
    if winsize is None:
        return argv, cwd, env, tty, None
    if not (isinstance(winsize, list) and [type(n) for n in winsize] == [int, int]):
        raise ValueError("winsize must be [rows, cols]")
    return argv, cwd, env, tty, (winsize[0], winsize[1])


class Command:
    """One connection, and the command it runs."""

    def __init__(self, agent: Agent, conn: socket.socket) -> None:
        self.agent = agent
        self.conn: socket.socket | None = conn
        self.rbuf = bytearray()
        self.fds: list[int] = []  # received, not handed on yet
        self.pid = 0
        self.tty = False
        self.status: int | None = None  # the wait status, once reaped
        self.ints = 0
        self.kill_at: float | None = None
        self.master = self.stdin = self.stdout = -1  # the tty relay's fds
        self.to_pty = bytearray()
        self.to_out = bytearray()
        self.pty_done = False
        self.quiet_at = 0.0  # with a tty, after the exit: when its output counts as drained

    # What to wait for, and what came.

    def wanted(self) -> list[tuple[int, int]]:
        wanted = [(self.conn.fileno(), READ)] if self.conn is not None else []
        if self.master >= 0:
            events = select.POLLIN if len(self.to_out) < BACKLOG else 0
            events |= select.POLLOUT if self.to_pty else 0
            if events:
                wanted.append((self.master, events))
        if self.stdin >= 0 and self.status is None and len(self.to_pty) < BACKLOG:
            wanted.append((self.stdin, READ))
        if self.stdout >= 0 and self.to_out:
            wanted.append((self.stdout, WRITE))
        return wanted

    def on_event(self, fd: int, events: int) -> None:
        if self.conn is not None and fd == self.conn.fileno():
            self.on_conn()
        elif fd == self.master:
            self.on_master(events)
        elif fd == self.stdin:
            self.on_stdin()
        elif fd == self.stdout:
            self.on_stdout(events)

    def on_conn(self) -> None:
        assert self.conn is not None
        try:
            data = recv_with_fds(self.conn, self.fds)
        except (OSError, ValueError):
            data = b""
        if not data:
            self.hang_up()
            return
        self.rbuf += data
        try:
            frames = take_frames(self.rbuf)
        except ValueError as e:
            self.fail(f"bad frame: {e}")
            return
        for frame in frames:
            if self.conn is None:
                return
            self.on_frame(frame)

    def on_frame(self, frame: Frame) -> None:
        op = frame.get("op")
        if not self.pid and op == "run":
            self.start(frame)
        elif not self.pid and op == "status":
            self.send({"op": "status", "running": sorted(self.agent.running)})
            self.finish()
        elif not self.pid:
            self.fail(f"the first frame must be run or status, not {op!r}")
        elif op == "signal":
            signum = frame.get("signal")
            if isinstance(signum, int) and signum in FORWARDED:
                self.forward(signum)
        elif op == "hangup":
            self.hang_up(keep=True)
        elif op == "winsize":
            rows, cols = frame.get("rows"), frame.get("cols")
            if self.master >= 0 and isinstance(rows, int) and isinstance(cols, int):
                set_window_size(self.master, rows, cols)

    # The command's life.

    def start(self, request: Frame) -> None:
        try:
            argv, cwd, env, self.tty, winsize = parse_run(request)
            if len(self.fds) != 3:
                raise ValueError(f"run needs 3 fds (stdin, stdout, stderr), got {len(self.fds)}")
        except ValueError as e:
            self.fail(f"bad run request: {e}")  # (which closes the fds)
            return
        fds, self.fds = self.fds, []
        child_fds = (fds[0], fds[1], fds[2])
        slave = -1
        if self.tty:
            self.master, slave = os.openpty()
            os.set_blocking(self.master, False)
            set_window_size(self.master, *(winsize or (24, 80)))
            child_fds = (slave, slave, slave)
        report_r, report_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            self.exec_command(argv, cwd, env, child_fds, report_w)
        close(report_w)
        close(slave)
        with open(report_r, "rb") as pipe:  # empty when the exec succeeded (close-on-exec)
            report = pipe.read()
        if self.tty:  # the relay's ends; the other fds only the command holds now
            self.stdin, self.stdout, fds = fds[0], fds[1], fds[2:]
        for fd in fds:
            close(fd)
        if report:
            os.waitpid(pid, 0)
            status, message = json.loads(report)
            self.exit(status, error=message)
            return
        self.pid = pid
        self.agent.running[pid] = self
        self.send({"op": "started", "pid": pid})

    def exec_command(
        self, argv: list[str], cwd: str, env: dict[str, str], fds: tuple[int, int, int], report: int
    ) -> NoReturn:
        """In the forked child: become the command, or write why not to report."""
        stage = "exec"
        try:
            signal.set_wakeup_fd(-1)
            for signum in RESET_SIGNALS:  # Python ignores SIGPIPE and SIGXFSZ; the command must not
                signal.signal(signum, signal.SIG_DFL)
            os.setsid()
            if self.tty:
                fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in fds]
            for target, fd in enumerate(high):
                os.dup2(fd, target)
            stage = "cwd"
            os.chdir(cwd)
            stage = "exec"
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            what = argv[0] if stage == "exec" else f"cwd {cwd}"
            status = 127 if stage == "exec" and e.errno == errno.ENOENT else 126
            os.write(report, json.dumps([status, f"{what}: {e.strerror}"]).encode())
        except Exception as e:
            os.write(report, json.dumps([126, f"{argv[0]}: {e}"]).encode())
        finally:
            os._exit(127)

    def targets(self) -> list[int]:
        """The process groups a signal goes to: the command's, and the pty's foreground one."""
        foreground = self.pid
        with suppress(OSError):
            if self.master >= 0:
                foreground = os.tcgetpgrp(self.master)
        return [foreground, self.pid] if foreground > 0 and foreground != self.pid else [self.pid]

    def forward(self, signum: int) -> None:
        if self.status is not None:
            return
        if signum == signal.SIGINT:
            self.ints += 1
            if self.ints >= KILL_AT_SIGINT:
                signum = signal.SIGKILL
        groups = self.targets()
        for group in groups if signum == signal.SIGKILL else groups[:1]:
            killpg(group, signum)

    def hang_up(self, keep: bool = False) -> None:
        """The caller went away (keep: the "hangup" op, the connection stays for the exit)."""
        if keep:
            if not self.pid or self.status is not None or self.kill_at is not None:
                return
        else:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if not self.pid or self.status is not None:
                self.finish()
                return
        self.signal_all(signal.SIGHUP, signal.SIGCONT)  # a stopped command must see its SIGHUP

    def terminate(self) -> None:
        """The agent stops: SIGTERM now, SIGKILL after the grace."""
        if not self.pid:
            self.finish()
        elif self.status is None:
            self.signal_all(signal.SIGTERM)

    def signal_all(self, *signums: int) -> None:
        """signums to every target group now, SIGKILL after the grace (on_time)."""
        for group in self.targets():
            for signum in signums:
                killpg(group, signum)
        self.kill_at = time.monotonic() + self.agent.grace_s

    def exited(self, wait_status: int) -> None:
        self.status = wait_status
        self.kill_at = None
        self.quiet_at = time.monotonic() + DRAIN_QUIET_S
        self.settle()

    def deadline(self) -> float | None:
        if self.kill_at is not None:
            return self.kill_at
        if self.tty and self.status is not None and not self.pty_done and not self.to_out:
            return self.quiet_at
        return None

    def on_time(self, now: float) -> None:
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self.forward(signal.SIGKILL)
        self.settle(now)

    def settle(self, now: float | None = None) -> None:
        """Finish once the command has exited and, with a tty, its output has gone out."""
        if self.status is None:
            return
        if self.tty:
            flushed = not self.to_out or self.stdout < 0 or self.conn is None
            quiet = self.pty_done or (now or time.monotonic()) >= self.quiet_at
            if not (flushed and quiet):
                return
        code = os.waitstatus_to_exitcode(self.status)  # -N when signal N ended it
        self.exit(*((128 - code, -code) if code < 0 else (code, None)))  # 128+N, as a shell

    # The tty relay: non-blocking on the agent's own pty, bounded writes on the caller's fds.

    def on_master(self, events: int) -> None:
        if events & select.POLLOUT and self.to_pty and not write_chunk(self.master, self.to_pty):
            self.to_pty.clear()
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            data = read_chunk(self.master)  # (EIO: every holder of the pty's slave closed it)
            if data:
                self.to_out += data
                self.quiet_at = time.monotonic() + DRAIN_QUIET_S
            elif data is not None:
                self.pty_done = True
                self.master = close(self.master)
                self.settle()

    def on_stdin(self) -> None:
        data = read_chunk(self.stdin)
        if data:
            self.to_pty += data
        elif data is not None:
            self.stdin = close(self.stdin)

    def on_stdout(self, events: int) -> None:
        if not (events & select.POLLOUT and write_chunk(self.stdout, self.to_out)):
            self.to_out.clear()  # the caller's side hung up
            self.stdout = close(self.stdout)
        elif not self.to_out:  # output paused while it was full: count quiet from now
            self.quiet_at = max(self.quiet_at, time.monotonic() + DRAIN_QUIET_S)
        self.settle()

    # The end.

    def send(self, message: Frame) -> None:
        if self.conn is not None:
            with suppress(OSError):
                self.conn.sendall(encode(message))

    def fail(self, message: str) -> None:
        self.exit(126, error=message)

    def exit(self, status: int, signum: int | None = None, error: str | None = None) -> None:
        """The last frame; a command still running (a failure here) is hung up."""
        self.send({"op": "exit", "status": status, "signal": signum, "error": error})
        if self.pid and self.status is None:
            self.hang_up()
        else:
            self.finish()

    def finish(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        for fd in (*self.fds, self.master, self.stdin, self.stdout):
            close(fd)
        self.fds, self.master, self.stdin, self.stdout = [], -1, -1, -1
        if self.status is None and self.pid:
            return  # still running, hung up: finished when reaped
        self.agent.running.pop(self.pid, None)
        self.agent.commands.discard(self)


class Agent:
    def __init__(self, path: str, grace_s: float) -> None:
        self.path = path
        self.grace_s = grace_s
        self.commands: set[Command] = set()
        self.running: dict[int, Command] = {}
        self.stopping = False
        self.listener: socket.socket | None = listen(path)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.on_stop_signal)

    def on_stop_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def serve(self) -> None:
        while True:
            if self.stopping and self.listener is not None:
                self.stop()  # (which may end the last command)
            if self.stopping and not self.commands:
                return
            poller = select.poll()
            poller.register(self.wake_r, select.POLLIN)
            listening = self.listener.fileno() if self.listener is not None else -1
            if listening >= 0:
                poller.register(listening, select.POLLIN)
            owners: dict[int, Command] = {}
            for command in self.commands:
                for fd, events in command.wanted():
                    poller.register(fd, events)
                    owners[fd] = command
            due = min((d for c in self.commands if (d := c.deadline()) is not None), default=None)
            timeout = None if due is None else max(0.0, due - time.monotonic()) * 1000 + 1
            for fd, events in poller.poll(timeout):
                owner = owners.get(fd)
                if owner is not None and owner in self.commands:  # (not ended by now)
                    self.dispatch(owner, owner.on_event, fd, events)
                elif fd == listening:
                    self.accept()
            self.reap()
            now = time.monotonic()
            for command in list(self.commands):
                self.dispatch(command, command.on_time, now)

    def dispatch(self, command: Command, turn: Callable[..., None], *args: Any) -> None:
        """One command's turn; a failure there ends that command, never the agent."""
        try:
            turn(*args)
        except Exception as e:
            log(f"command {command.pid}: {type(e).__name__}: {e}")
            command.fail(f"envd agent: {type(e).__name__}: {e}")

    def accept(self) -> None:
        assert self.listener is not None
        with suppress(OSError):  # (a caller already gone)
            conn, _ = self.listener.accept()
            conn.setblocking(True)
            self.commands.add(Command(self, conn))

    def reap(self) -> None:
        with suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            command = self.running.pop(pid, None)
            if command is not None:  # else an orphan that ended here
                command.exited(wait_status)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with suppress(OSError):
                os.unlink(self.path)
        for command in list(self.commands):
            command.terminate()


def listen(path: str) -> socket.socket:
    """Listen on path; it appears only once connections are accepted (then the agent is ready)."""
    fresh = path + ".new"
    for old in (path, fresh):
        with suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(old).st_mode):
                os.unlink(old)  # left by an agent that did not stop cleanly
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o077)
    try:
        listener.bind(fresh)
    finally:
        os.umask(umask)
    listener.listen(64)
    listener.setblocking(False)
    os.rename(fresh, path)
    return listener


def prctl(option: int, value: int) -> None:
    """prctl(2) (Linux); OSError when refused, ImportError or AttributeError without it."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        log("usage: agent.py SOCKET [HANGUP_GRACE_S]")
        return 2
    if sys.platform.startswith("linux"):
        # Before any fd comes (see above); each command is dumpable again from its execve.
        try:
            prctl(PR_SET_DUMPABLE, 0)
        except (ImportError, OSError, AttributeError) as e:
            log(f"cannot make the agent undumpable ({e}): its commands can read its fds")
        # Outside a container (tests), orphans of our commands are reparented to us as in one.
        with suppress(ImportError, OSError, AttributeError):
            if os.getpid() != 1:
                prctl(PR_SET_CHILD_SUBREAPER, 1)
    Agent(argv[1], float(argv[2]) if len(argv) == 3 else DEFAULT_GRACE_S).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
