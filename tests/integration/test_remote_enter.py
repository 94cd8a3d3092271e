"""The enter hot path on a remote engine: the CLI's fds, through the daemon, to a `docker exec`
the daemon runs on the engine (no gRPC, no click in envctl), with the project synced around it.

The engine (tests/integration/remote_engine.py) cannot see the project's folder: what the
command writes is on the host when envctl returns only because the daemon brought it back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl, stop_daemon
from tests.integration.conftest import remote_runner
from tests.integration.test_enter import popen_envctl
from tests.integration.test_enter_fast import TRAP_INT, Terminal, last_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, remote_docker_host: str) -> Iterator[Envctl]:
    root = tmp_path_factory.mktemp("remote-enter")
    runner = remote_runner(root, remote_docker_host)
    yield runner
    runner("stop", "--all", timeout=60)
    stop_daemon(runner)
    # The engine is the session's: leave it with no volume of ours (another module counts).
    docker = {**os.environ, "DOCKER_HOST": remote_docker_host}
    names = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", "label=envd.role=project-files"],
        env=docker, capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    ours = [n for n in names if n.startswith(f"{runner.namespace}-project-")]
    if ours:
        subprocess.run(["docker", "volume", "rm", "-f", *ours], env=docker, timeout=60)


@pytest.fixture(scope="module")
def project(remote: Envctl, default_project: Path) -> Path:
    """environments/default (its lock too), built on the remote engine and warm there."""
    path = remote.cwd / "entered"
    path.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (path / name).write_bytes((default_project / name).read_bytes())
    (path / "src").mkdir()
    (path / "src" / "in.txt").write_text("from the host\n")
    remote.ok("build", str(path))
    first = remote("enter", str(path), "--", "true", timeout=300)
    assert first.returncode == 0, first.stderr
    return path


def enter(remote: Envctl, path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "enter", str(path), "--", "sh", "-c", script],
        env={**remote.env, **env},
        cwd=remote.cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("status", [0, 1, 42])
def test_exit_statuses_pass_through_and_are_recorded(
    remote: Envctl, project: Path, status: int
) -> None:
    marker = f"remote-status-{status}"
    done = enter(remote, project, f": {marker}; exit {status}")
    assert done.returncode == status, done.stderr
    assert last_run(remote, "dflt", marker)["exit_code"] == status


def test_the_fast_path_takes_no_grpc_or_click_and_brings_files_back(
    remote: Envctl, project: Path
) -> None:
    script = "cat src/in.txt; echo made-there > out.txt; mkdir -p sub; echo deep > sub/x.txt"
    code = (
        "import sys\n"
        "from cli.entering import main_fast\n"
        f"status = main_fast(['enter', {str(project)!r}, '--', 'sh', '-c', {script!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'click'))\n"
        "sys.stderr.write(repr(heavy))\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=remote.env,
        cwd=remote.cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "[]"  # the daemon ran `docker exec`, not envctl
    assert proc.stdout == "from the host\n"
    # On the host as soon as envctl has returned: synced back before the exit status came.
    assert (project / "out.txt").read_text() == "made-there\n"
    assert (project / "sub" / "x.txt").read_text() == "deep\n"
    (project / "out.txt").unlink()
    gone = enter(remote, project, "test -e out.txt && echo there || echo gone")
    assert gone.stdout == "gone\n", gone.stderr


def test_stdin_stdout_and_stderr_are_the_callers(remote: Envctl, project: Path) -> None:
    data = os.urandom(3 << 20)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "enter", str(project), "--", "sh", "-c",
         "sha256sum; echo to-stderr >&2"],
        env=remote.env, cwd=remote.cwd, input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    import hashlib

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()
    assert proc.stderr == b"to-stderr\n"
    empty = subprocess.run(
        [sys.executable, "-m", "cli.main", "enter", str(project), "--", "wc", "-c"],
        env=remote.env, cwd=remote.cwd, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert empty.returncode == 0 and empty.stdout.strip() == "0", empty.stderr


def test_sigint_and_sigterm_reach_the_command(remote: Envctl, project: Path) -> None:
    proc = popen_envctl(
        remote, "enter", str(project), "--", "sh", "-c", f": remote-int; {TRAP_INT}",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert out == "got-int\nafter\n" and proc.returncode == 9
    assert last_run(remote, "dflt", "remote-int")["exit_code"] == 9

    sleeper = popen_envctl(
        remote, "enter", str(project), "--", "sh", "-c", "echo ready; exec sleep 60",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert sleeper.stdout is not None and sleeper.stdout.readline() == "ready\n"
    os.killpg(sleeper.pid, signal.SIGINT)
    sleeper.communicate(timeout=60)
    assert sleeper.returncode == 130

    term = popen_envctl(
        remote, "enter", str(project), "--", "sh", "-c",
        "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert term.stdout is not None and term.stdout.readline() == "ready\n"
    term.terminate()
    out, _ = term.communicate(timeout=60)
    assert out == "got-term\n" and term.returncode == 7


def test_ctrl_c_with_a_tty_ends_the_command_with_130(remote: Envctl, project: Path) -> None:
    # (The first size is set by the docker client just after the start, as with a plain
    # `docker exec -t` on an engine older than API 1.42: a resize is what is reliable.)
    script = "echo TERM=$TERM; echo ready; read line; stty size; sleep 60"
    term = Terminal(remote, 31, 103, "enter", str(project), "--", "sh", "-c", script)
    try:
        term.read_until(b"ready", timeout=60)
        assert b"TERM=xterm-256color" in term.out
        term.set_size(42, 120)
        term.proc.send_signal(signal.SIGWINCH)  # the kernel's is for a controlling terminal
        time.sleep(0.5)
        os.write(term.master, b"go\r")
        term.read_until(b"42 120")
        os.write(term.master, b"\x03")
        term.drain()
        assert term.proc.wait(timeout=30) == 130
        assert termios.tcgetattr(term.slave) == term.before  # restored
    finally:
        term.close()


def test_the_fallback_without_fd_passing_still_works_remote(remote: Envctl, project: Path) -> None:
    done = enter(remote, project, "echo fallback > fb.txt; exit 42", ENVD_ENTER_FAST="0")
    assert done.returncode == 42, done.stderr
    assert (project / "fb.txt").read_text() == "fallback\n"


def test_a_conflict_is_told_on_the_callers_stderr(remote: Envctl, project: Path) -> None:
    notes = project / "notes.md"
    notes.write_text("v1\n")
    assert enter(remote, project, "true").returncode == 0
    job = popen_envctl(
        remote, "enter", str(project), "--", "sh", "-c",
        "echo theirs > notes.md; echo ready; sleep 2",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert job.stdout is not None and job.stdout.readline() == "ready\n"
    time.sleep(0.1)
    notes.write_text("mine\n")  # while the command runs, after it wrote its own
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    assert notes.read_text() == "mine\n"
    assert (project / "notes.md.envd-remote").read_text() == "theirs\n"
    assert "conflict: notes.md" in err


def test_killing_the_cli_hangs_the_command_up_and_its_files_still_come_back(
    remote: Envctl, project: Path
) -> None:
    job = popen_envctl(
        remote, "enter", str(project), "--", "sh", "-c",
        ": remote-hup; trap 'echo hung-up > hup.txt; exit 5' HUP; echo ready;"
        " while true; do sleep 0.1; done",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert job.stdout is not None and job.stdout.readline() == "ready\n"
    job.kill()
    job.communicate(timeout=30)
    assert last_run(remote, "dflt", "remote-hup")["exit_code"] == 5
    assert (project / "hup.txt").read_text() == "hung-up\n"  # synced back before the record
