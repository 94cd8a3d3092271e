"""Bad files in one project never break envd for the others, and read-only commands write nothing.

Reproductions from the robustness issue, on the real daemon and engine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration


def test_a_dry_run_writes_no_lock(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "dry")
    out = json.loads(shared.ok("--json", "build", str(path), "--dry-run"))
    assert any(step["name"] == "packages" for step in out["result"]["steps"])
    assert not (path / "envd.lock").exists()
    assert sorted(p.name for p in path.iterdir()) == ["envd.yaml"]


def test_one_unreadable_lock_does_not_break_images_or_gc(
    shared: Envctl, default_project: Path
) -> None:
    broken = copy_template("default", shared.cwd / "binary-lock")
    (broken / "envd.yaml").write_text((broken / "envd.yaml").read_text() + "name: binlock\n")
    shared.ok("add", str(broken))
    (broken / "envd.lock").write_bytes(b'{"lock_version": 1, "x": "\xff\xfe"}\n')
    images = json.loads(shared.ok("--json", "images"))["images"]
    assert any(i["project"] == "dflt" for i in images)  # the healthy project's image is listed
    dry = shared("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    kept = {i["image"] for i in json.loads(shared.ok("--json", "images"))["images"]}
    assert kept == {i["image"] for i in images}
    check = shared("lock", str(broken), "--check")
    assert check.returncode == 1, check.stderr
    assert f"{broken / 'envd.lock'}:1" in check.stderr and "not UTF-8" in check.stderr
    assert "Traceback" not in check.stderr
    assert "delete" in check.stderr and "envctl lock" in check.stderr


def test_a_fifo_or_dev_zero_as_requirements_fails_fast(shared: Envctl, tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    path.mkdir()
    os.mkfifo(path / "reqs.txt")
    (path / "envd.yaml").write_text(
        "version: 1\nbase: {debian: bookworm}\nrequirements: reqs.txt\n"
    )
    proc = shared("validate", str(path), timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "regular file" in proc.stderr and f"{path / 'envd.yaml'}:3" in proc.stderr
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "reqs.txt").symlink_to("/dev/zero")
    (zero / "envd.yaml").write_text(
        "version: 1\nbase: {debian: bookworm}\nrequirements: reqs.txt\n"
    )
    proc = shared("validate", str(zero), timeout=30)
    assert proc.returncode == 1 and "character device, not a regular" in proc.stderr, proc.stderr
    assert shared.ok("daemon", "status")  # the daemon is still there and answers
