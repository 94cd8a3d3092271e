"""The user's terminal never enters a container (SECURITY-FINDINGS F4), on the real engine.

envctl runs on a pty made here, in every mix of terminal and redirected stdin, stdout and
stderr; inside the container a script looks at every descriptor it can reach (its own, and
those of every process through /proc) for the host's pty. And a warm container killed under a
command ends it with exit 10, recorded so.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl
from tests.integration.test_enter import warm
from tests.integration.test_enter_fast import envctl_argv, fast, last_run

pytestmark = pytest.mark.integration

__all__ = ["fast"]  # (a fixture of test_enter_fast, shared here)

# Every character device any process in the container holds, and whether the agent's own fds
# (the command's parent on the fast path) can be read.
LOOK = r"""
import json, os, stat, sys
report = {"held": [], "agent_fds_read": [], "own_ttys": [fd for fd in (0, 1, 2) if os.isatty(fd)]}
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        continue
    for name in names:
        try:
            st = os.stat(os.path.join(folder, name))
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            report["held"].append([int(pid), int(name), st.st_dev, st.st_ino, st.st_rdev])
agent = os.getppid()
with open(f"/proc/{agent}/cmdline", "rb") as f:
    report["parent"] = f.read().replace(b"\0", b" ").decode()
try:
    names = os.listdir(f"/proc/{agent}/fd")
except PermissionError:
    names = []
for name in names:
    try:
        os.readlink(f"/proc/{agent}/fd/{name}")
        open(f"/proc/{agent}/fd/{name}", "rb").close()
    except PermissionError:
        continue
    except OSError:
        pass
    report["agent_fds_read"].append(name)
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""

# which of stdin, stdout, stderr is the terminal (the others: /dev/null in, a file out)
MIXES = {
    "all three (tty mode)": (True, True, True),
    "stdin only, > log": (True, False, False),
    "stdin and stderr, > log": (True, False, True),
    "stdout and stderr, < /dev/null": (False, True, True),
    "stdout only": (False, True, False),
    "stderr only": (False, False, True),
}


class HostTerminal:
    """A pty pair on the host: envctl gets the slave, the test types into and reads the master."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        st = os.fstat(self.slave)
        self.identity = (st.st_dev, st.st_ino)
        self.output = bytearray()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:  # so that output to the terminal never blocks
        while not self._stop.is_set():
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.output += os.read(self.master, 1 << 16)
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal() -> Iterator[HostTerminal]:
    term = HostTerminal()
    yield term
    term.close()


def enter(
    envctl: Envctl, stdin: int, stdout: int, stderr: int, *args: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        envctl_argv("enter", *args),
        env={**envctl.env, "TERM": "xterm"},
        cwd=envctl.cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,  # as from a terminal emulator; the pty is not its ctty
    )


@pytest.mark.parametrize("mix", MIXES, ids=list(MIXES))
def test_no_process_in_the_container_holds_or_can_open_the_host_terminal(
    shared: Envctl, fast: Path, terminal: HostTerminal, tmp_path: Path, mix: str
) -> None:
    tty_in, tty_out, tty_err = MIXES[mix]
    report = fast / f"fds-{abs(hash(mix))}.json"
    report.unlink(missing_ok=True)
    with open(os.devnull, "rb") as null, open(tmp_path / "log", "wb") as log:
        proc = enter(
            shared,
            terminal.slave if tty_in else null.fileno(),
            terminal.slave if tty_out else log.fileno(),
            terminal.slave if tty_err else log.fileno(),
            str(fast), "--", "python3", "-I", "-c", LOOK, f"/workspace/{report.name}",
        )  # fmt: skip
        assert proc.wait(timeout=120) == 0, (terminal.output, (tmp_path / "log").read_bytes())
    seen = json.loads(report.read_text())
    report.unlink()
    assert "/run/envd/agent.py" in seen["parent"], seen  # the fast path, with its agent
    host = [held for held in seen["held"] if (held[2], held[3]) == terminal.identity]
    assert host == [], f"the host terminal is held in the container: {host}"
    assert seen["agent_fds_read"] == [], "the agent's descriptors were readable from the command"
    assert seen["own_ttys"] == ([0, 1, 2] if tty_in and tty_out else []), seen


def test_a_leftover_process_never_reads_what_is_typed_after_envctl_returned(
    shared: Envctl, fast: Path, terminal: HostTerminal, tmp_path: Path
) -> None:
    """`envctl enter P -- CMD > log` from a terminal; CMD leaves a `setsid` reader behind."""
    keys, done = fast / "keys", fast / "keys.done"
    keys.unlink(missing_ok=True)
    done.unlink(missing_ok=True)
    # (fd 3: sh gives a job it puts in the background /dev/null as its stdin)
    reader = "sleep 2; timeout 10 cat <&3 > /workspace/keys; echo $? > /workspace/keys.done"
    script = f"exec 3<&0; setsid sh -c '{reader}' & :"
    with open(tmp_path / "log", "wb") as log:
        proc = enter(shared, terminal.slave, log.fileno(), log.fileno(), str(fast), "--",
                     "sh", "-c", script)  # fmt: skip
        assert proc.wait(timeout=120) == 0, (tmp_path / "log").read_bytes()
    os.write(terminal.master, b"typed-after-envctl-returned\n")  # for the user's shell now
    deadline = time.monotonic() + 30
    while not done.exists():
        assert time.monotonic() < deadline, "the leftover reader never ended"
        time.sleep(0.1)
    captured = keys.read_bytes()
    keys.unlink()
    done.unlink()
    assert b"typed-after" not in captured
    assert captured == b""  # it read end-of-file: nothing links it to the terminal any more


def test_a_warm_container_killed_under_a_command_is_exit_10_and_recorded(
    shared: Envctl, fast: Path
) -> None:
    marker = "killed-under"
    proc = enter(
        shared, subprocess.DEVNULL, subprocess.PIPE, subprocess.PIPE,
        str(fast), "--", "sh", "-c", f": {marker}; echo ready; sleep 30",
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    subprocess.run(["docker", "kill", warm(shared)["dflt"]], check=True, capture_output=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 10, err
    assert b"warm container" in err and b"died" in err, err
    assert last_run(shared, "dflt", marker)["exit_code"] == 10
    assert shared("enter", str(fast), "--", "true").returncode == 0  # a new one starts
