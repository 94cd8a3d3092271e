"""State and engine agree, and a daemon's death loses nothing: an image removed behind envd's
back (`docker rmi`), gc beside a warm container, and a build cut short by kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SESSION_LABEL, Envctl

pytestmark = pytest.mark.integration

SPEC = 'version: 1\nname: {name}\nbase: {{debian: bookworm}}\npython: "3.11"\n'


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def has_image(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def make(shared: Envctl, name: str, extra: str = "") -> Path:
    path = shared.cwd / name
    path.mkdir(exist_ok=True)
    (path / "envd.yaml").write_text(SPEC.format(name=name) + extra)
    return path


def build(shared: Envctl, path: Path) -> str:
    """Build, and return the project's image tag."""
    shared.ok("build", str(path))
    return str(project(shared, path.name)["image"])


def project(shared: Envctl, name: str) -> dict[str, object]:
    projects = json.loads(shared.ok("--json", "ls")).get("projects", [])
    return next(p for p in projects if p["name"] == name)


def no_crash(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode != 3, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "internal error" not in proc.stderr


def test_share_output_of_an_image_removed_behind_envds_back(shared: Envctl) -> None:
    path = make(shared, "stshare")
    tag = build(shared, path)
    docker("rmi", tag)
    out = shared.cwd / "stshare.tar.gz"
    proc = shared("share", "image", "stshare", "--output", str(out))
    no_crash(proc)
    assert proc.returncode == 4, proc.stderr
    assert "no image for its current lock" in proc.stderr and "envctl build stshare" in proc.stderr
    assert not out.exists()
    build(shared, path)  # the hint's fix
    shared.ok("share", "image", "stshare", "--output", str(out))
    assert out.stat().st_size > 0


def test_enter_rebuilds_an_image_removed_behind_envds_back(shared: Envctl) -> None:
    path = make(shared, "stenter")
    tag = build(shared, path)
    shared.ok("stop", "--all")
    docker("rmi", tag)
    proc = shared("enter", "stenter", "--", "python", "-c", "print('back again')")
    no_crash(proc)
    assert proc.returncode == 0, proc.stderr
    assert "back again" in proc.stdout
    assert "building stenter first" in proc.stderr
    assert has_image(tag)


def test_gc_keeps_what_a_warm_container_runs_on_and_reports_measured_bytes(
    shared: Envctl,
) -> None:
    path = make(shared, "stgc", "packages: [six]\n")
    tag = build(shared, path)
    shared.ok("enter", "stgc", "--", "true")  # a warm container on it
    containers = docker(
        "ps", "-q", "--filter", f"label={SESSION_LABEL}", "--filter", "status=running"
    )
    assert containers.split()
    shared.ok("rm", "stgc")  # no project needs the image any more ...
    first = json.loads(shared.ok("--json", "gc"))
    assert tag not in {i["image"] for i in first.get("removed", [])}
    assert has_image(tag)  # ... but the container runs on it: kept
    running = docker("ps", "-q", "--filter", f"label={SESSION_LABEL}", "--filter", "status=running")
    assert set(containers.split()) <= set(running.split())
    # whatever went were only tags of the container's parents: the engine freed nothing
    assert int(first.get("freed_bytes", 0)) == 0
    shared.ok("stop", "--all")
    subprocess.run(["docker", "rm", "-f", *containers.split()], capture_output=True)
    second = json.loads(shared.ok("--json", "gc"))
    assert tag in {i["image"] for i in second.get("removed", [])}
    assert not has_image(tag)
    freed = int(second.get("freed_bytes", 0))
    assert freed > 0  # the packages layer (six) at least, which only this image held
    recorded = sum(int(i.get("size_bytes", 0)) for i in second["removed"])
    assert freed < recorded  # not the recorded sizes: those count the shared base again


def test_a_build_cut_short_by_kill_9_is_stale_at_the_next_start(
    envctl: Envctl, engine: None
) -> None:
    """The watcher is off here: it judges a project on each file change, which would race
    the state this test is about (envd.lock written by the build's own lock step)."""
    envctl.ok("config", "watch", "false")
    envctl.ok("daemon", "stop")  # the watcher is made (or not) at start
    path = make(envctl, "stkill", 'setup: ["sleep 120"]\n')
    envctl.ok("lock", str(path))
    build_proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "build", str(path)],
        env=envctl.env,
        cwd=envctl.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        state = ""
        while time.monotonic() < deadline:
            state = str(project(envctl, "stkill")["state"]).lower()
            if "building" in state:
                break
            assert build_proc.poll() is None, "the build ended before it could be cut short"
            time.sleep(0.3)
        assert "building" in state, state
        pid = int(json.loads(envctl.ok("--json", "daemon", "status"))["pid"])
        os.kill(pid, signal.SIGKILL)
        build_proc.wait(timeout=30)
    finally:
        if build_proc.poll() is None:
            build_proc.kill()
            build_proc.wait()
    after = project(envctl, "stkill")  # a new daemon starts here
    assert "stale" in str(after["state"]).lower(), after
    assert after["state_reason"] == "the daemon stopped during its build"
    assert "cut short" in (envctl.home / "logs" / "envd.log").read_text()
