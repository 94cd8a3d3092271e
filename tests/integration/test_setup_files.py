"""`setup:` steps that name project files: the files are there (read-only, a private copy at
/mnt/workspace, the command run from there), in the step's cache key, and never committed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

SPEC = """\
version: 1
base: {debian: bookworm}
python: "3.11"
packages: [six]
setup:
  - "echo before > /opt/before"
  - {run: "bash postBuild", files: [postBuild, conf/]}
  - "cat /opt/marker > /opt/after"
"""

POST_BUILD = """\
set -e
cp conf/value.txt /opt/marker
pwd > /opt/where
if touch conf/written 2>/dev/null; then echo writable > /opt/writable; fi
"""


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def build(envctl: Envctl, path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    out = envctl.ok("build", "--json", *extra, str(path))
    return json.loads(out[out.index('{\n  "result"') :])["result"]


def in_image(image: str, script: str) -> str:
    # --workdir /: the image's own WORKDIR (/workspace) would be made by the engine
    return docker("run", "--rm", "--workdir", "/", image, "sh", "-c", script)


def test_setup_files_are_seen_keyed_and_not_committed(shared: Envctl) -> None:
    path = shared.cwd / "postbuild"
    (path / "conf").mkdir(parents=True)
    (path / "envd.yaml").write_text(SPEC)
    (path / "postBuild").write_text(POST_BUILD)
    (path / "conf" / "value.txt").write_text("first\n")
    (path / "notes.txt").write_text("not named by any step\n")
    shared.ok("lock", str(path))
    first = build(shared, path)
    assert in_image(first["image"], "cat /opt/marker /opt/after /opt/where") == (
        "first\nfirst\n/mnt/workspace\n"
    )
    # read-only, and nothing of the step's files (nor a mount point) is in the image
    leftovers = (
        "ls -d /opt/writable /workspace /mnt/workspace 2>/dev/null; find / -xdev -name postBuild"
    )
    assert in_image(first["image"], leftovers + "; true") == ""

    # a file no step names changes nothing
    (path / "notes.txt").write_text("edited\n")
    assert build(shared, path)["cached"] is True

    # editing a named file rebuilds from its step on, and only from there
    (path / "conf" / "value.txt").write_text("second\n")
    plan = {s["name"]: s["cached"] for s in build(shared, path, "--dry-run")["steps"]}
    assert plan == {
        "base": True,
        "venv": True,
        "packages": True,
        "setup[0]": True,
        "setup[1]": False,
        "setup[2]": False,
        "metadata": False,
    }
    second = build(shared, path)
    ran = [s["name"] for s in second["steps"] if not s["cached"]]
    assert ran == ["setup[1]", "setup[2]", "metadata"]
    assert second["image"] != first["image"] and second["image_id"] != first["image_id"]
    assert in_image(second["image"], "cat /opt/marker /opt/after") == "second\nsecond\n"
    # `enter` uses the image of the files as they are now
    out = shared.ok("enter", str(path), "--", "cat", "/opt/marker")
    assert out == "second\n"

    # and back: the first build's steps are still cached
    (path / "conf" / "value.txt").write_text("first\n")
    back = build(shared, path)
    assert back["cached"] is True and back["image"] == first["image"]
