"""`envctl init` → lock → build → the project's own check, on real upstream projects.

The corpus is tests/realprojects/ (its README says what a folder holds). Each project runs
as a new user would run it, with no hand-written envd.yaml; a project that cannot work on
this host says so in `expect-error`, and the test asserts envd's message instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "realprojects"
PROJECTS = sorted(p for p in CORPUS.iterdir() if (p / "project").is_dir())


def source(folder: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in (folder / "SOURCE").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip():
            fields[key.strip()] = value.strip()
    return fields


def test_every_project_names_its_source() -> None:
    assert PROJECTS, "the corpus is empty"
    for folder in PROJECTS:
        fields = source(folder)
        assert fields.get("repository", "").startswith("https://"), folder.name
        assert len(fields.get("commit", "")) >= 7, folder.name
        assert fields.get("kind"), folder.name
        assert (folder / "check").is_file() or (folder / "expect-error").is_file(), folder.name


@pytest.mark.parametrize("folder", PROJECTS, ids=[p.name for p in PROJECTS])
def test_init_lock_build_check(shared: Envctl, tmp_path: Path, folder: Path) -> None:
    directory = tmp_path / folder.name
    shutil.copytree(folder / "project", directory, symlinks=True)
    expected = folder / "expect-error"
    steps = [("init", str(directory)), ("lock", str(directory)), ("build", str(directory))]
    for step in steps:
        proc = shared(*step)
        if proc.returncode != 0:
            assert expected.is_file(), (
                f"envctl {' '.join(step)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
            assert expected.read_text().strip() in proc.stderr, proc.stderr
            return
    assert not expected.is_file(), f"{folder.name} built, but expect-error says it cannot"
    check = (folder / "check").read_text().strip()
    out = shared.ok("enter", str(directory), "--", "sh", "-c", check)
    print(out)
