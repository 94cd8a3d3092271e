"""The daemon notices edits: stale, invalid, missing, and background rebuilds."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envd.services.watching import DEBOUNCE_S
from tests.conftest import Envctl, copy_template
from tests.integration.events import EventStream

pytestmark = pytest.mark.integration


def state(envctl: Envctl, path: Path) -> tuple[str, str]:
    for p in json.loads(envctl.ok("--json", "ls"))["projects"]:
        if p["path"] == str(path):
            return p["state"].removeprefix("PROJECT_STATE_").lower(), p.get("state_reason", "")
    raise AssertionError(f"{path} is not registered")


def of(name: str, says: str = "") -> Callable[[dict[str, Any]], bool]:
    """An event about project `name` whose message mentions `says`."""
    return lambda event: event["project"] == name and says in event["message"]


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_edit_marks_stale_then_lock_rebuilds_in_background(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "watched")
    shared.ok("build", str(path))  # cold: a pull tags only the last step; its edit rebuilds all
    with EventStream(shared) as events:
        spec = (path / "envd.yaml").read_text()
        (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - six"))
        events.wait("project.stale", of("watched"))
        assert state(shared, path)[0] == "stale"
        assert "package added: six" in state(shared, path)[1]
        assert "package added: six" in shared.ok("status", str(path))
        shared.ok("lock", str(path))  # the user re-locks; the daemon rebuilds by itself
        events.wait("watch.rebuild", of("watched"))
        events.wait("build.finished", of("watched"))
        wait_for(lambda: state(shared, path)[0] == "ready", 120)
        proc = shared("enter", str(path), "--", "python", "-c", "import six")
        assert proc.returncode == 0 and "running:" not in proc.stderr  # no build at enter
    kinds = events.kinds()
    assert "project.stale" in kinds and "watch.rebuild" in kinds
    assert kinds.index("project.stale") < kinds.index("watch.rebuild")
    assert "build.finished" in kinds


def test_a_burst_of_saves_starts_one_build(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "burst")
    shared.ok("build", str(path))  # cold: a pull tags only the last step; its edit rebuilds all
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - idna"))
    with shared.no_background_builds(), EventStream(shared) as events:  # lock starts no build
        shared.ok("lock", str(path))
        events.wait("project.stale", of("burst", "older than envd.lock"))
    text = (path / "envd.lock").read_text()
    with EventStream(shared) as events:
        for _ in range(10):  # an editor saving by rename, ten times
            tmp = path / ".envd.lock.swp"
            tmp.write_text(text)
            tmp.rename(path / "envd.lock")
            time.sleep(0.02)
        events.wait("watch.rebuild", of("burst"))
        events.wait("build.finished", of("burst"))
        wait_for(lambda: state(shared, path)[0] == "ready", 120)
        time.sleep(DEBOUNCE_S + 0.5)  # a second (wrong) rebuild would have started by now
    rebuilds = [e for e in events.events if e["kind"] == "watch.rebuild"]
    assert len(rebuilds) == 1, events.events


def test_invalid_edit_keeps_the_old_image(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "breaks")
    shared.ok("build", str(path))  # uncached: the steps of "watched" and "burst" serve it here
    with EventStream(shared) as events:
        (path / "envd.yaml").write_text("base: {debian: bookworm}\npakages: [x]\n")
        events.wait("project.invalid", of("breaks"))
    assert state(shared, path)[0] == "invalid"
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
    with EventStream(shared) as events:
        shutil.rmtree(path)
        events.wait("project.missing", of("vanishing"))
    assert state(shared, path)[0] == "missing"
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
    shared.ok("build", str(path))  # cold: envd.yaml is edited first, the cached lock is stale
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    with EventStream(shared) as events:
        _includes_are_followed(shared, path, events)


def _includes_are_followed(shared: Envctl, path: Path, events: EventStream) -> None:
    (path / "deps" / "base.txt").write_text("pyyaml\nsix\n")
    events.wait("project.stale", of("includes", "six"))
    assert "six" in state(shared, path)[1]
    shared.ok("lock", str(path))  # what the hint says
    shared.ok("build", str(path))
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    (path / "deps" / "more.txt").write_text("idna\n")
    (path / "deps" / "base.txt").write_text("pyyaml\nsix\n-r more.txt\n")
    events.wait("project.stale", of("includes", "idna"))
    shared.ok("lock", str(path))
    shared.ok("build", str(path))
    wait_for(lambda: state(shared, path)[0] == "ready", 60)
    (path / "deps" / "more.txt").write_text("idna\nsix\nattrs\n")
    events.wait("project.stale", of("includes", "attrs"))
    assert "attrs" in state(shared, path)[1]
