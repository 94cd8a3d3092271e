"""The enter hot path on the real engine: the CLI's own fds, through the daemon, to the agent.

Which path a command took is read from inside it: on the fast path its parent is the envd agent
(`python3 -I -S /run/envd/agent.py`); through `docker exec` its parent is outside the container.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from envd.gateways.agent_client import AGENT_SCRIPT as AGENT_SCRIPT_PATH
from tests.conftest import Envctl
from tests.integration.test_enter import new_project, popen_envctl, warm

pytestmark = pytest.mark.integration

PARENT = "tr '\\0' ' ' < /proc/$PPID/cmdline 2>/dev/null; echo"
MIB = 1 << 20
BIG = 256 * MIB


def envctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def runs(envctl: Envctl, project: str) -> list[dict]:  # type: ignore[type-arg]
    proc = envctl("--json", "runs", "--project", project, "-n", "50")
    assert proc.returncode == 0 and proc.stdout.startswith("{"), (proc.stdout, proc.stderr)
    return list(json.loads(proc.stdout)["runs"])


def last_run(envctl: Envctl, project: str, marker: str) -> dict:  # type: ignore[type-arg]
    """The newest run whose command mentions marker, once it is finished (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        found = [r for r in runs(envctl, project) if marker in " ".join(r["command"])]
        if found and found[0]["finished"]:
            return found[0]
        assert time.monotonic() < deadline, f"no finished run for {marker}: {found}"
        time.sleep(0.2)


def parent_of(envctl: Envctl, project: Path, **env: str) -> str:
    """The command line of the command's parent inside the container."""
    proc = subprocess.run(
        envctl_argv("enter", str(project), "--", "sh", "-c", PARENT),
        env={**envctl.env, **env},
        cwd=envctl.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def fast(shared: Envctl, default_project: Path) -> Path:
    """The default project, warm, its container's agent answering the fast path."""
    assert "/run/envd/agent.py" in parent_of(shared, default_project)
    return default_project


# ---------------------------------------------------------------- statuses and records


@pytest.mark.parametrize(
    ("script", "status"),
    [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 42", 42),
        ("kill -INT $$", 130),
        ("kill -KILL $$", 137),
    ],
)
def test_exit_statuses_pass_through_and_are_recorded(
    shared: Envctl, fast: Path, script: str, status: int
) -> None:
    marker = f"status-{status}."
    proc = shared("enter", str(fast), "--", "sh", "-c", f": {marker}; {script}")
    assert proc.returncode == status, proc.stderr
    assert last_run(shared, "dflt", marker)["exit_code"] == status


def test_a_missing_command_is_127_and_says_so(shared: Envctl, fast: Path) -> None:
    proc = shared("enter", str(fast), "--", "no-such-command-here")
    assert proc.returncode == 127 and "no-such-command-here" in proc.stderr
    assert last_run(shared, "dflt", "no-such-command-here")["exit_code"] == 127


def test_the_fast_path_imports_no_grpc_protobuf_or_click(shared: Envctl, fast: Path) -> None:
    code = (
        "import sys\n"
        "from cli.entering import main_fast\n"
        f"status = main_fast(['enter', {str(fast)!r}, '--', 'sh', '-c', {PARENT!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'click'))\n"
        "sys.stderr.write(repr(heavy))\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=shared.env,
        cwd=shared.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "/run/envd/agent.py" in proc.stdout, proc.stderr
    assert proc.stderr == "[]"


# ---------------------------------------------------------------- the command's own I/O


def test_stdin_stdout_stderr_are_separate_binary_and_end(shared: Envctl, fast: Path) -> None:
    data = bytes(range(256)) * 1000 + b"\0\r\n\x03\x04 no newline at the end"
    proc = subprocess.run(
        envctl_argv("enter", str(fast), "--", "sh", "-c", "cat; printf 'err\\0out' >&2; exit 3"),
        env=shared.env,
        cwd=shared.cwd,
        input=data,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 3 and proc.stdout == data and proc.stderr == b"err\0out"


def test_an_empty_stdin_is_eof_at_once(shared: Envctl, fast: Path) -> None:
    proc = subprocess.run(
        envctl_argv("enter", str(fast), "--", "wc", "-c"),
        env=shared.env,
        cwd=shared.cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr


def test_256_mib_through_stdin(shared: Envctl, fast: Path) -> None:
    block = os.urandom(MIB)
    digest = hashlib.sha256(block * (BIG // MIB)).hexdigest()
    proc = subprocess.Popen(
        envctl_argv("enter", str(fast), "--", "sha256sum"),
        env=shared.env,
        cwd=shared.cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    for _ in range(BIG // MIB):
        proc.stdin.write(block)
    proc.stdin.close()
    out = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0 and out.split()[0] == digest


def test_256_mib_through_stdout(shared: Envctl, fast: Path) -> None:
    proc = subprocess.Popen(
        envctl_argv("enter", str(fast), "--", "head", "-c", str(BIG), "/dev/urandom"),
        env=shared.env,
        cwd=shared.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    total, nonzero = 0, 0
    while chunk := proc.stdout.read(MIB):
        total += len(chunk)
        nonzero += chunk.count(0) < len(chunk)
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0 and total == BIG and nonzero == BIG // MIB


# ---------------------------------------------------------------- signals


TRAP_INT = (
    "trap 'echo got-int; sleep 0.3; echo after; exit 9' INT; echo ready;"
    " while true; do sleep 0.1; done"
)


def test_sigint_without_a_tty_reaches_the_command(shared: Envctl, fast: Path) -> None:
    marker = "int-no-tty"
    proc = popen_envctl(
        shared,
        "enter",
        str(fast),
        "--",
        "sh",
        "-c",
        f": {marker}; {TRAP_INT}",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own group, as a terminal's foreground job is
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out == "got-int\nafter\n" and proc.returncode == 9
    assert last_run(shared, "dflt", marker)["exit_code"] == 9


def test_sigterm_reaches_the_command(shared: Envctl, fast: Path) -> None:
    marker = "term-no-tty"
    proc = popen_envctl(
        shared,
        "enter",
        str(fast),
        "--",
        "sh",
        "-c",
        f": {marker}; trap 'echo got-term; exit 7' TERM; echo ready;"
        " while true; do sleep 0.1; done",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert out == "got-term\n" and proc.returncode == 7
    assert last_run(shared, "dflt", marker)["exit_code"] == 7


class Terminal:
    """envctl on a pty of its own, as in a terminal emulator."""

    def __init__(self, envctl: Envctl, rows: int, cols: int, *args: str) -> None:
        self.master, slave = pty.openpty()
        self.set_size(rows, cols, slave)
        self.before = termios.tcgetattr(slave)
        self.slave = slave
        self.proc = subprocess.Popen(
            envctl_argv(*args),
            env={**envctl.env, "TERM": "xterm-256color"},
            cwd=envctl.cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        self.out = b""
        self.stopping = threading.Event()
        self.drainer: threading.Thread | None = None

    def set_size(self, rows: int, cols: int, fd: int | None = None) -> None:
        size = struct.pack("HHHH", rows, cols, 0, 0)
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, size)

    def read_until(self, text: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {self.out!r}"
            if select.select([self.master], [], [], left)[0]:
                try:
                    self.out += os.read(self.master, 65536)
                except OSError:  # EIO: no process has the pty open any more
                    break
        return self.out

    def drain(self) -> None:
        """Keep reading in the background, so the command's output never blocks."""

        def loop() -> None:
            while not self.stopping.is_set():
                try:
                    if select.select([self.master], [], [], 0.2)[0]:
                        data = os.read(self.master, 65536)
                        if not data:
                            return
                        self.out += data
                    elif self.proc.poll() is not None:
                        return
                except OSError:
                    return

        self.drainer = threading.Thread(target=loop, daemon=True)
        self.drainer.start()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stopping.set()
        if self.drainer is not None:  # before its fd number can be someone else's
            self.drainer.join()
        os.close(self.master)
        os.close(self.slave)


def test_ctrl_c_with_a_tty_reaches_the_command(shared: Envctl, fast: Path) -> None:
    marker = "int-tty"
    term = Terminal(shared, 24, 80, "enter", str(fast), "--", "sh", "-c", f": {marker}; {TRAP_INT}")
    try:
        term.read_until(b"ready")
        deadline = time.monotonic() + 10  # raw once envctl hears the command started
        while termios.tcgetattr(term.slave)[3] & termios.ICANON:
            assert time.monotonic() < deadline, "the terminal never went raw"
            time.sleep(0.01)
        os.write(term.master, b"\x03")
        term.read_until(b"after")
        term.drain()
        assert term.proc.wait(timeout=30) == 9
        assert termios.tcgetattr(term.slave) == term.before  # restored
    finally:
        term.close()
    assert last_run(shared, "dflt", marker)["exit_code"] == 9


def test_the_tty_has_the_window_size_and_follows_it(shared: Envctl, fast: Path) -> None:
    script = "echo TERM=$TERM; stty size; echo ready; read line; stty size; test -t 0"
    term = Terminal(shared, 31, 103, "enter", str(fast), "--", "sh", "-c", script)
    try:
        term.read_until(b"ready")
        assert b"TERM=xterm-256color" in term.out and b"31 103" in term.out
        term.set_size(42, 120)
        term.proc.send_signal(signal.SIGWINCH)  # the kernel's is for a controlling terminal
        time.sleep(0.5)
        os.write(term.master, b"go\r")
        term.read_until(b"42 120")
        term.drain()
        assert term.proc.wait(timeout=30) == 0
    finally:
        term.close()


def test_killing_the_cli_hangs_the_command_up(shared: Envctl, fast: Path) -> None:
    marker = "hangup"
    mark = fast / "hung-up"
    mark.unlink(missing_ok=True)
    proc = popen_envctl(
        shared,
        "enter",
        str(fast),
        "--",
        "sh",
        "-c",
        f": {marker}; trap 'echo hup > hung-up; exit 3' HUP; echo ready;"
        " while true; do sleep 0.1; done",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    run = last_run(shared, "dflt", marker)
    assert run["exit_code"] == 3 and mark.read_text() == "hup\n"
    mark.unlink()


# ---------------------------------------------------------------- fallback and swap


def test_the_fallback_path_behaves_the_same(shared: Envctl, fast: Path) -> None:
    off = {**shared.env, "ENVD_ENTER_FAST": "0"}
    assert "/run/envd/agent.py" not in parent_of(shared, fast, ENVD_ENTER_FAST="0")
    for status in (0, 1, 42):
        proc = subprocess.run(
            envctl_argv(
                "enter", str(fast), "--", "sh", "-c", f": fallback-{status}.; exit {status}"
            ),
            env=off,
            cwd=shared.cwd,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == status
        assert last_run(shared, "dflt", f"fallback-{status}.")["exit_code"] == status
    proc = subprocess.Popen(
        envctl_argv("enter", str(fast), "--", "sh", "-c", f": fallback-int; {TRAP_INT}"),
        env=off,
        cwd=shared.cwd,
        text=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert out == "got-int\nafter\n" and proc.returncode == 9
    assert last_run(shared, "dflt", "fallback-int")["exit_code"] == 9


def test_a_daemon_without_agents_is_entered_through_docker_exec(envctl: Envctl) -> None:
    """ENVD_AGENT=0: containers run `sleep infinity`; the enter socket refuses, envctl falls
    back by itself, with the same status and record."""
    from tests.conftest import copy_template

    envctl.env["ENVD_AGENT"] = "0"
    proj = copy_template("default", envctl.cwd / "noagent")
    (proj / "envd.yaml").write_text((proj / "envd.yaml").read_text() + "name: noagent\n")
    envctl.ok("build", str(proj))
    out = envctl.ok("enter", str(proj), "--", "sh", "-c", PARENT)
    assert "/run/envd/agent.py" not in out
    assert envctl("enter", str(proj), "--", "sh", "-c", ": noagent; exit 5").returncode == 5
    assert last_run(envctl, "noagent", ": noagent")["exit_code"] == 5
    assert not list((envctl.home / "run" / "agents").glob("*/agent.sock"))
    envctl.ok("stop", "--all")


def test_two_projects_swapped_back_and_forth(shared: Envctl, fast: Path) -> None:
    other = new_project(shared, "swapfast")
    shared.ok("build", str(other))
    seen: dict[str, set[str]] = {"dflt": set(), "swapfast": set()}
    for round_ in range(3):
        for name, path in (("dflt", fast), ("swapfast", other)):
            marker = f"swap-{name}-{round_}"
            proc = shared(
                "enter", str(path), "--", "sh", "-c", f": {marker}; {PARENT}; echo $ENVD_PROJECT"
            )
            assert proc.returncode == 0 and "/run/envd/agent.py" in proc.stdout, proc.stderr
            assert proc.stdout.splitlines()[-1] == name
            assert last_run(shared, name, marker)["exit_code"] == 0
            seen[name].add(warm(shared)[name])
    assert all(len(ids) == 1 for ids in seen.values()), seen  # each stayed warm
    shared.ok("stop", "swapfast")


def test_the_entrypoint_falls_back_to_sleep_without_python(
    shared: Envctl, fast: Path, tmp_path: Path
) -> None:
    """An image with no python3 on its PATH: the marker, and `sleep infinity` as PID 1's child."""
    from envd.services.agents import AGENT_SOCKET, AGENT_SOCKET_DIR, NO_AGENT, agent_entrypoint
    from tests.conftest import SESSION_LABEL

    image = inspect_image_of(warm(shared)["dflt"])
    results = {}
    for name, path in (("without", "/nowhere"), ("with", "")):
        folder = tmp_path / name
        folder.mkdir(mode=0o700)
        entrypoint = ["/bin/sh", *agent_entrypoint()[1:]]
        argv = ["docker", "run", "-d", "--rm", "--label", SESSION_LABEL, "--init"]
        argv += ["-v", f"{folder}:{AGENT_SOCKET_DIR}"]
        argv += ["-v", f"{AGENT_SCRIPT_PATH}:/run/envd/agent.py:ro"]
        argv += ["-e", f"PATH={path}"] if path else []
        argv += ["--entrypoint", entrypoint[0], image, *entrypoint[1:], "/bin/sleep", "infinity"]
        container = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        try:
            deadline = time.monotonic() + 20
            while not any((folder / f).exists() for f in (NO_AGENT, AGENT_SOCKET)):
                assert time.monotonic() < deadline, "neither the agent nor the marker"
                time.sleep(0.05)
            top = subprocess.run(
                ["docker", "top", container], capture_output=True, text=True
            ).stdout
            sleeping = any(
                re.search(r"\s{2}/bin/sleep infinity$", line) for line in top.splitlines()
            )
            results[name] = ((folder / NO_AGENT).exists(), sleeping, top)
        finally:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    assert results["without"][:2] == (True, True), results
    assert results["with"][:2] == (False, False), results
    assert "agent.py" in results["with"][2]


def inspect_image_of(container: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.Image}}", container], capture_output=True, text=True
    )
    return out.stdout.strip()
