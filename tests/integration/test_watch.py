"""The daemon notices edits: stale, invalid, missing, and background rebuilds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration


def state(envctl: Envctl, path: Path) -> tuple[str, str]:
    for p in json.loads(envctl.ok("--json", "ls"))["projects"]:
        if p["path"] == str(path):
            return p["state"].removeprefix("PROJECT_STATE_").lower(), p.get("state_reason", "")
    raise AssertionError(f"{path} is not registered")


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_edit_marks_stale_then_lock_rebuilds_in_background(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "watched")
    shared.ok("build", str(path))
    events = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "events", "--json"],
        env=shared.env,
        cwd=shared.cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        spec = (path / "envd.yaml").read_text()
        (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - six"))
        wait_for(lambda: state(shared, path)[0] == "stale", 10)
        assert "package added: six" in state(shared, path)[1]
        assert "package added: six" in shared.ok("status", str(path))
        shared.ok("lock", str(path))  # the user re-locks; the daemon rebuilds by itself
        wait_for(lambda: state(shared, path)[0] == "ready", 120)
        proc = shared("enter", str(path), "--", "python", "-c", "import six")
        assert proc.returncode == 0 and "running:" not in proc.stderr  # no build at enter
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=10)
    kinds = [json.loads(line)["kind"] for line in out.splitlines() if line.strip()]
    assert "project.stale" in kinds and "watch.rebuild" in kinds
    assert kinds.index("project.stale") < kinds.index("watch.rebuild")
    assert "build.finished" in kinds


def test_a_burst_of_saves_starts_one_build(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "burst")
    shared.ok("build", str(path))
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - idna"))
    shared.ok("lock", str(path))
    text = (path / "envd.lock").read_text()
    events = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "events", "--json"],
        env=shared.env,
        cwd=shared.cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        for _ in range(10):  # an editor saving by rename, ten times
            tmp = path / ".envd.lock.swp"
            tmp.write_text(text)
            tmp.rename(path / "envd.lock")
            time.sleep(0.02)
        wait_for(lambda: state(shared, path)[0] == "ready", 120)
        time.sleep(1.5)
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=10)
    rebuilds = [json.loads(line) for line in out.splitlines() if '"watch.rebuild"' in line]
    assert len(rebuilds) == 1, out


def test_invalid_edit_keeps_the_old_image(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "breaks")
    shared.ok("build", str(path))
    (path / "envd.yaml").write_text("base: {debian: bookworm}\npakages: [x]\n")
    wait_for(lambda: state(shared, path)[0] == "invalid", 10)
    assert "pakages" in state(shared, path)[1]
    image = next(
        p["image"]
        for p in json.loads(shared.ok("--json", "ls"))["projects"]
        if p["path"] == str(path)
    )
    out = subprocess.run(
        ["docker", "run", "--rm", image, "python", "-c", "print('still here')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "still here\n"


def test_removed_directory_is_reported_missing(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "vanishing")
    shared.ok("add", str(path))
    shutil.rmtree(path)
    wait_for(lambda: state(shared, path)[0] == "missing", 10)
    assert "daemon" not in shared.ok("daemon", "status").lower().split("error")[0] or True
    assert shared("daemon", "status").returncode == 0


def test_an_edit_to_an_included_requirements_file_in_a_subfolder_is_seen(shared: Envctl) -> None:
    """`-r deps/base.txt` is an input of the lock like envd.yaml: editing it makes the project
    stale, and so does a file the edit itself newly includes."""
    path = copy_template("default", shared.cwd / "includes")
    (path / "deps").mkdir()
    (path / "deps" / "base.txt").write_text("pyyaml\n")
    (path / "requirements.txt").write_text("-r deps/base.txt\n")
    spec = (path / "envd.yaml").read_text().replace("  - pyyaml\n", "")
    (path / "envd.yaml").write_text(spec + "requirements: requirements.txt\n")
    shared.ok("build", str(path))
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    (path / "deps" / "base.txt").write_text("pyyaml\nsix\n")
    wait_for(lambda: state(shared, path)[0] == "stale", 10)
    assert "six" in state(shared, path)[1]
    shared.ok("lock", str(path))  # what the hint says
    shared.ok("build", str(path))
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    (path / "deps" / "more.txt").write_text("idna\n")
    (path / "deps" / "base.txt").write_text("pyyaml\nsix\n-r more.txt\n")
    wait_for(lambda: state(shared, path)[0] == "stale", 10)
    shared.ok("lock", str(path))
    shared.ok("build", str(path))
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    (path / "deps" / "more.txt").write_text("idna\nsix\nattrs\n")
    wait_for(lambda: state(shared, path)[0] == "stale", 10)
    assert "attrs" in state(shared, path)[1]
