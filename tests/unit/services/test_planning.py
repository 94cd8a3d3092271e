"""envd/services/planning.py: the one plan for a lock, with the project files it reads, so that
the builder, the current-image check and sharing name a project's image alike."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.store import ProjectRow
from envd.model.plan import make_plan
from envd.model.state import ProjectState
from envd.services.planning import plan_for, read_project_inputs, reads_project_files
from tests.unit.model.test_plan import NUMPY, lock

_SETUP = lock(python=(NUMPY,), setup=("sh scripts/setup.sh",))
SETUP = replace(_SETUP, inputs=replace(_SETUP.inputs, setup_files=(("scripts/setup.sh",),)))


def row(path: Path) -> ProjectRow:
    return ProjectRow("proj", str(path), 0.0, ProjectState.READY, "", "", "")


def project(tmp_path: Path, script: str) -> Path:
    (tmp_path / "scripts").mkdir(exist_ok=True)
    (tmp_path / "scripts" / "setup.sh").write_text(script)
    return tmp_path


def test_the_plan_names_the_image_the_builder_builds(tmp_path: Path) -> None:
    root = project(tmp_path, "echo one\n")
    inputs = read_project_inputs(str(root), SETUP)
    built = make_plan("proj", SETUP, "envd-x", setup_files=inputs.setup_files)
    assert plan_for(row(root), SETUP, "envd-x").tag == built.tag
    assert built.tag.startswith("envd-x/proj:")


def test_an_edited_setup_file_names_another_image(tmp_path: Path) -> None:
    before = plan_for(row(project(tmp_path, "echo one\n")), SETUP, "envd-x").tag
    after = plan_for(row(project(tmp_path, "echo two\n")), SETUP, "envd-x").tag
    assert before != after


def test_the_setup_files_bytes_are_kept_by_their_digest(tmp_path: Path) -> None:
    root = project(tmp_path, "echo one\n")
    inputs = read_project_inputs(str(root), SETUP)
    (step_file,) = inputs.setup_files["scripts/setup.sh"]
    assert step_file.path == "scripts/setup.sh" and not step_file.executable
    assert inputs.contents[step_file.sha256] == b"echo one\n"


def test_a_project_without_pyproject_is_told_what_project_needs(tmp_path: Path) -> None:
    wants_project = replace(SETUP, inputs=replace(SETUP.inputs, project="editable"))
    with pytest.raises(SpecError, match=r"installs the project from its pyproject\.toml"):
        read_project_inputs(str(project(tmp_path, "echo one\n")), wants_project)


def test_only_a_lock_with_setup_files_or_a_project_reads_project_files() -> None:
    assert reads_project_files(SETUP)
    assert not reads_project_files(lock(python=(NUMPY,)))
    assert reads_project_files(replace(lock(), inputs=replace(lock().inputs, project="install")))
