"""The envd agent, run on this host as a container runs it (`python3 -I -S agent.py SOCKET`).

No Docker: the caller's fds are pipes or a pty pair made here, and envd.gateways.agent_client
is the other end.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from envd.errors import ContainerError
from envd.gateways.agent_client import AGENT_SCRIPT, AgentCommand, run_in_agent, running_commands

AGENT = AGENT_SCRIPT
GRACE_S = 0.3  # the agent's SIGHUP -> SIGKILL grace in these tests
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    path: str


@pytest.fixture
def agent() -> Iterator[Agent]:
    folder = tempfile.mkdtemp(prefix="envd-agent-", dir="/tmp")  # short: sun_path is 108 bytes
    os.chmod(folder, 0o700)
    path = os.path.join(folder, "agent.sock")
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(AGENT), path, str(GRACE_S)])
    try:
        assert wait_for(lambda: os.path.exists(path) or proc.poll() is not None)
        assert proc.poll() is None, "the agent did not start"
        yield Agent(proc, path)
        if proc.returncode is None:  # (a test may have ended it)
            proc.terminate()
            assert proc.wait(timeout=5) == 0
            assert not os.path.exists(path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@dataclass
class Piped:
    command: AgentCommand
    stdin: int
    stdout: int
    stderr: int

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            try:
                os.close(fd)
            except OSError:
                pass
        self.command.close()


def start(
    agent: Agent, argv: list[str], *, cwd: str = "/", env: dict[str, str] | None = None
) -> Piped:
    """argv in the agent on three new pipes; the test holds their other ends."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        command = run_in_agent(
            agent.path, argv, cwd, ENV if env is None else env, (in_r, out_w, err_w)
        )
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    return Piped(command, in_w, out_r, err_r)


def read_all(fd: int, into: bytearray) -> threading.Thread:
    def pump() -> None:
        while chunk := os.read(fd, 1 << 16):
            into.extend(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def run(
    agent: Agent,
    argv: list[str],
    stdin: bytes = b"",
    *,
    cwd: str = "/",
    env: dict[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Like subprocess.run: (exit status, stdout, stderr)."""
    piped = start(agent, argv, cwd=cwd, env=env)
    out, err = bytearray(), bytearray()
    readers = [read_all(piped.stdout, out), read_all(piped.stderr, err)]

    def feed() -> None:
        try:
            os.write(piped.stdin, stdin)
        finally:
            os.close(piped.stdin)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        status = piped.command.wait(timeout=5)
        for thread in [writer, *readers]:
            thread.join(timeout=2)
            assert not thread.is_alive(), "no EOF: something still holds the pipes"
        return status, bytes(out), bytes(err)
    finally:
        os.close(piped.stdout)
        os.close(piped.stderr)
        piped.command.close()


def readline(fd: int, timeout: float = 2.0) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        assert select.select([fd], [], [], timeout)[0], f"no line in {timeout}s (so far {line!r})"
        byte = os.read(fd, 1)
        assert byte, f"EOF after {line!r}"
        line += byte
    return line


def read_to_eof(fd: int, timeout: float = 2.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"no EOF in {timeout}s (so far {data!r})")


def group_members(pgid: int) -> list[str]:
    """The names of the live processes in process group pgid."""
    names = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            names.append(stat[stat.index("(") + 1 : stat.rindex(")")])
    return names


def parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("PPid:")[1].split()[0])


# Exit statuses.


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_status_is_the_commands(agent: Agent, code: int) -> None:
    assert run(agent, ["sh", "-c", f"exit {code}"])[0] == code


@pytest.mark.parametrize(
    ("name", "status"), [("INT", 130), ("KILL", 137), ("TERM", 143), ("HUP", 129)]
)
def test_death_by_signal_is_128_plus_n(agent: Agent, name: str, status: int) -> None:
    piped = start(agent, ["sh", "-c", f"kill -s {name} $$"])
    try:
        assert piped.command.wait(timeout=2) == status
        assert piped.command.signal == status - 128
    finally:
        piped.close()


def test_a_command_that_cannot_start_says_why(agent: Agent, tmp_path: Path) -> None:
    missing = run_in_agent(agent.path, ["no-such-command-x"], "/", ENV, (0, 1, 2))
    assert (missing.pid, missing.returncode) == (None, 127)
    assert missing.error is not None and "no-such-command-x" in missing.error
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    not_executable = run_in_agent(agent.path, [str(plain)], "/", ENV, (0, 1, 2))
    assert not_executable.wait() == 126
    bad_cwd = run_in_agent(agent.path, ["true"], str(tmp_path / "gone"), ENV, (0, 1, 2))
    assert bad_cwd.wait() == 126
    assert bad_cwd.error is not None and "cwd" in bad_cwd.error
    assert run(agent, ["true"])[0] == 0  # and the agent goes on


def test_a_request_without_fds_is_refused(agent: Agent) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(agent.path)
        body = json.dumps({"op": "run", "argv": ["true"], "cwd": "/", "env": {}}).encode()
        sock.sendall(struct.pack(">I", len(body)) + body)
        sock.settimeout(2)
        reply = sock.recv(4096)
    frame = json.loads(reply[4:])
    assert frame["op"] == "exit" and frame["status"] == 126 and "3 fds" in frame["error"]


def test_garbage_ends_only_its_connection(agent: Agent) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(agent.path)
        sock.sendall(struct.pack(">I", 1 << 30) + b"{")
        sock.settimeout(2)
        frame = json.loads(sock.recv(4096)[4:])
        assert frame["status"] == 126 and "bad frame" in frame["error"]
        assert sock.recv(4096) == b""
    assert run(agent, ["sh", "-c", "exit 3"])[0] == 3


# The caller's own stdin, stdout and stderr.


def test_stdio_is_separate_and_binary(agent: Agent) -> None:
    data = bytes(range(256)) * 1000 + b"\0\0end"
    script = (
        "import sys; d = sys.stdin.buffer.read(); "
        "sys.stdout.buffer.write(d[::-1]); "
        "sys.stderr.buffer.write(b'\\0err\\0' + bytes([len(d) % 251]))"
    )
    status, out, err = run(agent, [sys.executable, "-c", script], stdin=data)
    assert status == 0
    assert out == data[::-1]
    assert err == b"\0err\0" + bytes([len(data) % 251])


def test_stdin_eof_reaches_the_command(agent: Agent) -> None:
    assert run(agent, ["cat"], stdin=b"abc\0def\n") == (0, b"abc\0def\n", b"")


def test_signal_dispositions_are_the_defaults(agent: Agent) -> None:
    # Python ignores SIGPIPE; a command run from it must not: `yes` dies of it, 128 + 13.
    script = "(yes; echo yes:$? >&2) | head -c 1 >/dev/null"
    assert run(agent, ["sh", "-c", script]) == (0, b"", b"yes:141\n")


def test_cwd_and_env_are_applied(agent: Agent, tmp_path: Path) -> None:
    env = {"PATH": ENV["PATH"], "FOO": "bar baz"}
    script = 'pwd; echo "$FOO"; echo "${HOME-unset}"'
    status, out, _ = run(agent, ["sh", "-c", script], cwd=str(tmp_path), env=env)
    assert status == 0
    assert out.decode().splitlines() == [os.path.realpath(tmp_path), "bar baz", "unset"]


BIG = 256 << 20
BLOCK = os.urandom(1 << 20)


def pump_through(stdin_w: int, stdout_r: int) -> None:
    """BIG bytes into stdin_w, checked as they come back out of stdout_r."""

    def feed() -> None:
        view = memoryview(BLOCK)
        for _ in range(BIG // len(BLOCK)):
            written = 0
            while written < len(view):
                written += os.write(stdin_w, view[written:])
        os.close(stdin_w)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    twice, got = BLOCK + BLOCK, 0
    while chunk := os.read(stdout_r, 1 << 20):
        offset = got % len(BLOCK)
        assert chunk == twice[offset : offset + len(chunk)], f"corrupt at byte {got}"
        got += len(chunk)
    writer.join()
    assert got == BIG


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_cat_directly() -> float:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    started = time.perf_counter()
    direct = subprocess.Popen(["cat"], stdin=in_r, stdout=out_w)
    os.close(in_r)
    os.close(out_w)
    pump_through(in_w, out_r)
    assert direct.wait() == 0
    os.close(out_r)
    return time.perf_counter() - started


def through_cat_in_the_agent(agent: Agent) -> float:
    started = time.perf_counter()
    piped = start(agent, ["cat"])
    try:
        pump_through(piped.stdin, piped.stdout)
        assert piped.command.wait(timeout=10) == 0
        return time.perf_counter() - started
    finally:
        piped.close()


@pytest.mark.slow
def test_a_big_pipe_runs_at_native_speed(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    direct_s, agent_s, agent_cpu = [], [], cpu_seconds(agent.proc.pid)
    for _ in range(2):  # alternated, best of two: the first round warms the caches
        direct_s.append(through_cat_directly())
        agent_s.append(through_cat_in_the_agent(agent))
    agent_cpu = cpu_seconds(agent.proc.pid) - agent_cpu
    mib = BIG >> 20
    with capsys.disabled():
        print(
            f"\n  {mib} MiB each way through cat: direct {mib / min(direct_s):.0f} MiB/s, "
            f"via the agent {mib / min(agent_s):.0f} MiB/s (agent CPU {agent_cpu * 1000:.0f} ms)"
        )
    assert agent_cpu < 0.1, "the agent copied the data instead of passing the fds"
    assert min(agent_s) < 5 * min(direct_s) + 1  # loose: the cores are shared and noisy


def test_a_warm_enter_is_cheap(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        assert run_in_agent(agent.path, ["true"], "/", ENV, (0, 1, 2)).wait(timeout=2) == 0
    via_agent = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for _ in range(rounds):
        subprocess.run(["true"], check=True)
    direct = (time.perf_counter() - started) / rounds
    with capsys.disabled():
        print(f"\n  `true`: via the agent {via_agent * 1000:.1f} ms, direct {direct * 1000:.1f} ms")
    assert via_agent < 0.05


# Signals and hangups.


def wait_for_child(piped: Piped, name: str) -> None:
    assert readline(piped.stdout) == b"ready\n"
    assert wait_for(lambda: name in group_members(piped.command.pid or -1))


@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_signals_are_forwarded(agent: Agent, signum: int, status: int) -> None:
    piped = start(agent, ["sleep", "30"])
    try:
        piped.command.send_signal(signum)
        assert piped.command.wait(timeout=2) == status
    finally:
        piped.close()


def test_a_forwarded_signal_reaches_the_process_group(agent: Agent) -> None:
    # sh runs its trap only once `sleep` ends: it must have had the SIGINT too.
    script = 'trap "echo got-int; exit 3" INT; echo ready; sleep 30; echo after'
    piped = start(agent, ["sh", "-c", script])
    try:
        wait_for_child(piped, "sleep")
        piped.command.send_signal(signal.SIGINT)
        assert piped.command.wait(timeout=2) == 3
        assert readline(piped.stdout) == b"got-int\n"
    finally:
        piped.close()


def test_the_third_ctrl_c_kills(agent: Agent) -> None:
    piped = start(agent, ["sh", "-c", "trap '' INT; echo ready; sleep 30"])
    try:
        wait_for_child(piped, "sleep")
        for _ in range(2):
            piped.command.send_signal(signal.SIGINT)
            with pytest.raises(TimeoutError):
                piped.command.wait(timeout=0.2)
        piped.command.send_signal(signal.SIGINT)
        assert piped.command.wait(timeout=2) == 137
        assert piped.command.signal == signal.SIGKILL
    finally:
        piped.close()


def test_closing_the_connection_hangs_up_the_command(agent: Agent) -> None:
    script = "trap 'echo hung-up >&2; exit 5' HUP; echo ready; sleep 30"
    piped = start(agent, ["sh", "-c", script])
    try:
        wait_for_child(piped, "sleep")
        piped.command.close()
        assert b"hung-up\n" in read_to_eof(piped.stderr)
        assert wait_for(lambda: running_commands(agent.path) == [])
    finally:
        piped.close()


def test_a_hangup_request_hangs_up_and_still_reports_the_status(agent: Agent) -> None:
    """What the daemon does when its CLI went away: the command is hung up, its status comes."""
    piped = start(agent, ["sh", "-c", "trap 'echo hung-up >&2; exit 5' HUP; echo ready; sleep 30"])
    try:
        wait_for_child(piped, "sleep")
        assert piped.command.poll() is None
        piped.command.hang_up()
        assert piped.command.wait(timeout=5) == 5 and piped.command.signal is None
        assert b"hung-up\n" in read_to_eof(piped.stderr)
    finally:
        piped.close()


def test_a_hangup_request_to_a_deaf_command_kills_it_after_the_grace(agent: Agent) -> None:
    piped = start(agent, ["sh", "-c", "trap '' HUP; echo ready; sleep 30"])
    try:
        wait_for_child(piped, "sleep")
        piped.command.hang_up()
        piped.command.hang_up()  # a second one changes nothing
        hung_up = time.monotonic()
        assert piped.command.wait(timeout=5) == 128 + signal.SIGKILL
        assert time.monotonic() - hung_up >= GRACE_S * 0.9
    finally:
        piped.close()


def test_poll_reads_an_exit_that_has_come(agent: Agent) -> None:
    piped = start(agent, ["true"])
    try:
        assert wait_for(lambda: piped.command.poll() is not None)
        assert piped.command.returncode == 0
    finally:
        piped.close()


def test_a_command_deaf_to_sighup_is_killed_after_the_grace(agent: Agent) -> None:
    piped = start(agent, ["sh", "-c", "trap '' HUP; echo ready; sleep 30"])
    pid = piped.command.pid
    assert pid is not None
    try:
        wait_for_child(piped, "sleep")
        piped.command.close()
        hung_up = time.monotonic()
        time.sleep(GRACE_S / 6)
        alive = sorted(group_members(pid))
        if time.monotonic() - hung_up < GRACE_S * 0.8:  # (a loaded machine may be too slow)
            assert alive == ["sh", "sleep"], "SIGKILL came with the SIGHUP"
        assert read_to_eof(piped.stdout) == b""  # every holder of the pipe is dead
        assert time.monotonic() - hung_up >= GRACE_S * 0.9
        assert wait_for(lambda: running_commands(agent.path) == [])
    finally:
        piped.close()


def test_stopping_the_agent_ends_its_commands(agent: Agent) -> None:
    piped = start(agent, ["sleep", "30"])
    try:
        agent.proc.terminate()
        assert piped.command.wait(timeout=2) == 143
        assert agent.proc.wait(timeout=2) == 0
        assert not os.path.exists(agent.path)
    finally:
        piped.close()


# PID 1 duties and concurrency.


def test_an_agent_that_dies_is_an_error_not_a_status(agent: Agent) -> None:
    piped = start(agent, ["sleep", "30"])
    pid = piped.command.pid
    assert pid is not None
    try:
        agent.proc.kill()  # (the container went away)
        agent.proc.wait()
        with pytest.raises(ContainerError, match="closed the connection"):
            piped.command.wait(timeout=2)
    finally:
        os.killpg(pid, signal.SIGKILL)  # outside a container nothing else ends it
        piped.close()


def test_orphans_are_reaped(agent: Agent) -> None:
    piped = start(agent, ["sh", "-c", "sleep 0.3 & echo $!"])
    try:
        orphan = int(readline(piped.stdout))
        assert piped.command.wait(timeout=2) == 0
        assert parent_of(orphan) == agent.proc.pid  # it is the agent's now, as PID 1's
        assert wait_for(lambda: parent_of(orphan) is None)  # ended, and reaped: no zombie
        assert run(agent, ["sh", "-c", "exit 9"])[0] == 9
    finally:
        piped.close()


def test_two_commands_run_at_once(agent: Agent) -> None:
    first = start(agent, ["cat"])
    try:
        # The second holds nothing of the first's (its stdin pipe would never see EOF).
        assert run(agent, ["sh", "-c", "ls /proc/$$/fd; exit 4"]) == (4, b"0\n1\n2\n", b"")
        assert first.command.poll() is None
        assert running_commands(agent.path) == [first.command.pid]
        os.write(first.stdin, b"first\n")
        os.close(first.stdin)
        assert first.command.wait(timeout=2) == 0
        assert os.read(first.stdout, 100) == b"first\n"
    finally:
        first.close()


# A terminal.


class Terminal:
    """A pty pair standing for the caller's terminal (raw, as envctl sets it); reads its output."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.output = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            if select.select([self.master], [], [], 0.05)[0]:
                self.output += os.read(self.master, 1 << 16)
            elif self._stop.is_set():
                return

    def wait_for(self, text: bytes) -> None:
        assert wait_for(lambda: text in self.output), f"no {text!r} in {bytes(self.output)!r}"

    def close(self) -> bytes:
        self._stop.set()
        self._reader.join(timeout=2)
        os.close(self.master)
        os.close(self.slave)
        return bytes(self.output)

    def run(
        self, agent: Agent, argv: list[str], winsize: tuple[int, int] | None = (24, 80)
    ) -> AgentCommand:
        fds = (self.slave, self.slave, self.slave)
        return run_in_agent(agent.path, argv, "/", ENV, fds, tty=True, winsize=winsize)


def test_a_tty_command_gets_a_controlling_terminal_of_the_given_size(agent: Agent) -> None:
    terminal = Terminal()
    script = (
        "stty size; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo std-tty; "
        "exec 3</dev/tty && echo has-ctty; read line; echo got:$line; exit 4"
    )
    try:
        with terminal.run(agent, ["sh", "-c", script], winsize=(33, 101)) as command:
            terminal.wait_for(b"has-ctty")
            os.write(terminal.master, b"hello\r")  # Enter, from a raw terminal
            assert command.wait(timeout=2) == 4
    finally:
        output = terminal.close()
    assert output == b"33 101\r\nstd-tty\r\nhas-ctty\r\nhello\r\ngot:hello\r\n"


def test_a_tty_is_the_size_of_the_callers_terminal_by_default(agent: Agent) -> None:
    terminal = Terminal()
    fcntl.ioctl(terminal.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    try:
        with terminal.run(agent, ["stty", "size"], winsize=None) as command:
            assert command.wait(timeout=2) == 0
    finally:
        output = terminal.close()
    assert output == b"30 90\r\n"


def test_a_bad_window_size_is_refused(agent: Agent) -> None:
    terminal = Terminal()
    try:
        command = terminal.run(agent, ["true"], winsize=(24, "80"))  # a careless client
        assert command.returncode == 126
        assert command.error is not None and "winsize" in command.error
    finally:
        terminal.close()


def test_a_tty_follows_window_size_changes(agent: Agent) -> None:
    terminal = Terminal()
    script = 'trap "stty size; exit 7" WINCH; stty size; while :; do sleep 0.02; done'
    try:
        with terminal.run(agent, ["sh", "-c", script]) as command:
            terminal.wait_for(b"24 80\r\n")
            command.resize(50, 132)
            assert command.wait(timeout=2) == 7
    finally:
        output = terminal.close()
    assert output == b"24 80\r\n50 132\r\n"


def test_a_tty_command_output_is_drained_before_its_exit(agent: Agent) -> None:
    terminal = Terminal()
    size = 300_000
    script = f"import sys; sys.stdout.write('x' * {size}); sys.stdout.flush()"
    try:
        with terminal.run(agent, [sys.executable, "-c", script]) as command:
            assert command.wait(timeout=5) == 0
            written = len(terminal.output)
            time.sleep(0.1)
    finally:
        output = terminal.close()
    assert output == b"x" * size
    # all of it was in the caller's terminal when the exit came (only the kernel's buffer left)
    assert size - written <= 1 << 16


def test_a_tty_command_is_interrupted_by_ctrl_c_signals_and_hangup(agent: Agent) -> None:
    terminal = Terminal()
    try:
        with terminal.run(agent, ["sh", "-c", "echo ready; sleep 30"]) as command:
            terminal.wait_for(b"ready")
            os.write(terminal.master, b"\x03")  # the pty's own line discipline makes it SIGINT
            assert command.wait(timeout=2) == 130
        with terminal.run(agent, ["sh", "-c", "echo steady; sleep 30"]) as command:
            terminal.wait_for(b"steady")
            command.send_signal(signal.SIGTERM)  # forwarded to the pty's foreground group
            assert command.wait(timeout=2) == 143
        with terminal.run(agent, ["sleep", "30"]) as command:
            pid = command.pid
            assert pid is not None
        assert wait_for(lambda: not group_members(pid))
    finally:
        terminal.close()


def test_a_stop_right_after_an_idle_connection_ends_the_agent(agent: Agent) -> None:
    """(The daemon probes an agent with a connection it closes at once.)"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(agent.path)
    probe.close()
    agent.proc.terminate()
    assert agent.proc.wait(timeout=5) == 0 and not os.path.exists(agent.path)


# The caller's terminal stays on the host (SECURITY-FINDINGS F4).

FD_REPORT = r"""
import json, os, stat, sys
def rdevs(folder):
    found = {}
    for name in os.listdir(folder):
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            found[name] = st.st_rdev
    return found
report = {"self": rdevs("/proc/self/fd"), "agent": rdevs(f"/proc/{os.getppid()}/fd")}
report["ttys"] = [fd for fd in (0, 1, 2) if os.isatty(fd)]
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""

MIXES = {
    "all three": (True, True, True),
    "stdin only": (True, False, False),
    "stdout only": (False, True, False),
    "stderr only": (False, False, True),
    "stdin and stderr": (True, False, True),
    "stdout and stderr": (False, True, True),
}


@pytest.mark.parametrize("mix", MIXES, ids=list(MIXES))
def test_no_terminal_of_the_caller_reaches_the_command_or_the_agent(
    agent: Agent, tmp_path: Path, mix: str
) -> None:
    terminal = Terminal()
    host_tty = os.fstat(terminal.slave).st_rdev
    null_r = os.open(os.devnull, os.O_RDONLY)
    null_w = os.open(os.devnull, os.O_WRONLY)
    which = MIXES[mix]
    fds = (
        terminal.slave if which[0] else null_r,
        terminal.slave if which[1] else null_w,
        terminal.slave if which[2] else null_w,
    )
    report = tmp_path / "fds.json"
    argv = [sys.executable, "-I", "-c", FD_REPORT, str(report)]
    try:
        tty_mode = which[0] and which[1]
        with run_in_agent(agent.path, argv, "/", ENV, fds, tty=tty_mode) as command:
            assert command.wait(timeout=5) == 0
    finally:
        terminal.close()
        os.close(null_r)
        os.close(null_w)
    seen = json.loads(report.read_text())
    assert host_tty not in seen["self"].values(), seen  # the command's own fds
    assert host_tty not in seen["agent"].values(), seen  # what the agent holds meanwhile
    assert seen["ttys"] == ([0, 1, 2] if tty_mode else []), seen  # its own pty, or pipes


def test_what_is_typed_after_the_command_ends_never_reaches_a_leftover_process(
    agent: Agent, tmp_path: Path
) -> None:
    """`envctl enter P -- sh -c 'setsid ... &' > log` from a terminal: the process left behind
    must not read what the user types into that terminal afterwards."""
    master, slave = os.openpty()
    keys, done = tmp_path / "keys", tmp_path / "done"
    leftover = f"sleep 0.5; timeout 3 cat <&3 > {keys}; echo $? > {done}"
    out_r, out_w = os.pipe()
    try:  # (fd 3: sh gives a job it puts in the background /dev/null as stdin)
        argv = ["sh", "-c", f"exec 3<&0; setsid sh -c '{leftover}' & :"]
        with run_in_agent(agent.path, argv, "/", ENV, (slave, out_w, out_w)) as command:
            assert command.wait(timeout=5) == 0
        os.write(master, b"typed-later\n")  # envctl has returned: the shell's input now
        assert wait_for(done.exists, timeout=10)
        assert b"typed-later" not in keys.read_bytes()
        assert done.read_text() == "0\n"  # cat read EOF at once, no terminal kept it waiting
    finally:
        for fd in (master, slave, out_r, out_w):
            os.close(fd)


def test_the_commands_cannot_read_the_agents_fds(tmp_path: Path) -> None:
    """Same uid, but the agent is not dumpable: /proc/<agent>/fd takes CAP_SYS_PTRACE, which
    containers lack (the agent and its commands lose it here through setpriv, as in one)."""
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv here to drop CAP_SYS_PTRACE")
    drop = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"]
    script = (
        "import os, sys\n"
        "folder = f'/proc/{sys.argv[1]}/fd'\n"
        "try:\n"
        "    names = os.listdir(folder)\n"
        "except PermissionError:\n"
        "    names = []\n"
        "for name in names:\n"
        "    try:\n"
        "        os.readlink(os.path.join(folder, name))\n"
        "    except PermissionError:\n"
        "        continue\n"
        "    sys.exit(f'read {folder}/{name}')\n"
        "print('refused')\n"
    )
    path = str(tmp_path / "agent.sock")
    proc = subprocess.Popen([*drop, sys.executable, "-I", "-S", str(AGENT), path, str(GRACE_S)])
    try:
        assert wait_for(lambda: os.path.exists(path) or proc.poll() is not None)
        argv = [sys.executable, "-I", "-c", script, str(proc.pid)]
        status, out, err = run(Agent(proc, path), argv)
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    assert (status, out) == (0, b"refused\n"), err


def test_output_to_a_terminal_is_there_when_the_status_comes(agent: Agent) -> None:
    """stdout a terminal, stdin not (no pty): the command writes into a pipe, and the relay
    copies what it wrote before its exit onto the terminal before wait() returns."""
    terminal = Terminal()
    size = 300_000
    script = f"import os, sys; sys.stdout.write('y' * {size}); sys.stdout.flush(); "
    script += "sys.exit(3 if os.isatty(1) else 0)"  # a pipe, never the terminal itself
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        fds = (null, terminal.slave, terminal.slave)
        with run_in_agent(agent.path, [sys.executable, "-c", script], "/", ENV, fds) as command:
            assert command.wait(timeout=5) == 0
            written = len(terminal.output)
            time.sleep(0.1)
    finally:
        output = terminal.close()
        os.close(null)
    assert output == b"y" * size
    assert size - written <= 1 << 16  # (only what the kernel's pty buffer held)
