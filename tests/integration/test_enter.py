"""envctl enter on the real engine: exit codes, pipes, users, reuse, swap, stop, restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration


def warm(envctl: Envctl) -> dict[str, str]:
    return {
        c["project"]: c["container_id"] for c in json.loads(envctl.ok("--json", "ps"))["containers"]
    }


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_codes_pass_through(shared: Envctl, default_project: Path, code: int) -> None:
    proc = shared("enter", str(default_project), "--", "sh", "-c", f"exit {code}")
    assert proc.returncode == code, proc.stderr


def test_python_runs_with_the_spec_env(shared: Envctl, default_project: Path) -> None:
    out = shared.ok(
        "enter",
        str(default_project),
        "--",
        "python",
        "-c",
        "import os, sys, numpy; print(sys.version_info[:2], os.environ['PYTHONHASHSEED'],"
        " os.getcwd(), sys.prefix)",
    )
    assert out.strip() == "(3, 11) 0 /workspace /opt/venv"


def test_pipes_both_ways(shared: Envctl, default_project: Path) -> None:
    assert shared.ok("enter", str(default_project), "--", "cat", input="hello\n") == "hello\n"
    out = shared.ok("enter", str(default_project), "--", "sh", "-c", "wc -l", input="a\nb\nc\n")
    assert out.strip() == "3"


def test_workspace_files_belong_to_the_caller(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "touch", "made-inside")
    made = default_project / "made-inside"
    assert made.stat().st_uid == os.getuid()
    made.unlink()


def test_files_belong_to_a_non_root_caller(shared: Envctl, default_project: Path) -> None:
    """The Enter call as uid 4321 (what envctl sends for that user), then docker exec."""
    mine = default_project / "u4321"
    mine.mkdir(exist_ok=True)
    os.chown(mine, 4321, 4321)
    code = (
        "import sys, json\n"
        "from cli.context import AppContext\n"
        "from envd.v1 import envd_pb2 as pb\n"
        f"req = pb.EnterRequest(project=pb.ProjectRef(ref={str(default_project)!r}),"
        f" command=['touch', 'by-4321'], uid=4321, gid=4321, user_name='ada', cwd={str(mine)!r})\n"
        "t = [e.target for e in AppContext().client().stream('Enter', req)"
        " if e.HasField('target')][0]\n"
        "print(json.dumps({'c': t.container_id, 'u': t.user, 'argv': list(t.argv),"
        " 'env': dict(t.env), 'w': t.workdir}))\n"
    )
    target = json.loads(
        subprocess.run(
            [sys.executable, "-c", code],
            env=shared.env,
            cwd=shared.cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert target["u"] == "4321:4321" and target["env"]["HOME"] == "/home/ada"
    assert target["w"] == "/workspace/u4321"
    subprocess.run(
        ["docker", "exec", "-u", target["u"], "-w", target["w"], target["c"], *target["argv"]],
        check=True,
    )
    made = mine / "by-4321"
    assert made.stat().st_uid == 4321
    made.unlink()
    mine.rmdir()
    home = subprocess.run(
        ["docker", "exec", "-u", "4321", target["c"], "sh", "-c", "cd ~ && touch ok && echo $HOME"],
        capture_output=True,
        text=True,
    )
    assert home.returncode == 0


def test_second_enter_reuses_and_swap_comes_back(shared: Envctl, default_project: Path) -> None:
    other = copy_template("default", shared.cwd / "other")
    (other / "envd.yaml").write_text((other / "envd.yaml").read_text() + "name: other\n")
    shared.ok("enter", str(default_project), "--", "true")
    first = warm(shared)["dflt"]
    shared.ok("enter", str(other), "--", "true")
    shared.ok("enter", str(default_project), "--", "true")
    shared.ok("enter", str(other), "--", "true")
    now = warm(shared)
    assert now["dflt"] == first and "other" in now


def test_stop_and_idle_expiry(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    assert "stopped dflt" in shared.ok("stop", "dflt")
    assert "dflt" not in warm(shared)
    shared.ok("config", "idle_timeout", "2")
    try:
        shared.ok("enter", str(default_project), "--", "true")
        deadline = time.monotonic() + 20
        while "dflt" in warm(shared) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "dflt" not in warm(shared)
    finally:
        shared.ok("config", "idle_timeout", "1800")


def test_daemon_restart_keeps_the_warm_container(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    before = warm(shared)["dflt"]
    shared.ok("daemon", "stop")
    assert shared.ok("enter", str(default_project), "--", "echo", "back") == "back\n"
    assert warm(shared)["dflt"] == before


def test_a_killed_container_is_replaced(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    killed = subprocess.run(
        ["docker", "kill", warm(shared)["dflt"]], capture_output=True, text=True
    )
    assert killed.returncode == 0, killed.stderr
    assert shared.ok("enter", str(default_project), "--", "echo", "ok") == "ok\n"


def test_unknown_project_is_a_clear_error(shared: Envctl) -> None:
    proc = shared("enter", "no-such-project", "--", "true")
    assert proc.returncode == 4
    assert "no project named `no-such-project`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_reaches_the_command(shared: Envctl, default_project: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "enter",
            str(default_project),
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.1; done",
        ],
        env=shared.env,
        cwd=shared.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "got-term" in out and proc.returncode == 7
