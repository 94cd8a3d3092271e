"""envd.yaml must be a regular file inside its project: through the real CLI and daemon, a
link to a file outside is refused with a fix (never read), and a FIFO or /dev/zero is named
for what it is instead of "has no envd.yaml"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

SPEC = "version: 1\nbase: {debian: bookworm}\n"


def test_envd_yaml_linked_outside_the_project_is_refused(shared: Envctl, tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(SPEC + "name: stolen\n")
    project = tmp_path / "symout"
    project.mkdir()
    (project / "envd.yaml").symlink_to(tmp_path / "outside.yaml")
    proc = shared("validate", str(project), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"points to {tmp_path / 'outside.yaml'}, outside the project" in proc.stderr
    assert "copy the file into the project" in proc.stderr
    assert "stolen" not in shared.ok("ls")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_envd_yaml_that_is_not_a_regular_file_is_named(
    shared: Envctl, tmp_path: Path, kind: str
) -> None:
    project = tmp_path / kind
    project.mkdir()
    if kind == "fifo":
        os.mkfifo(project / "envd.yaml")
    else:
        (project / "envd.yaml").symlink_to("/dev/zero")
    proc = shared("validate", str(project), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "not a regular file" in proc.stderr and "has no envd.yaml" not in proc.stderr
