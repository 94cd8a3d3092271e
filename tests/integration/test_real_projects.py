"""`envctl init` → lock → build → the project's own check, on real upstream projects.

The corpus is tests/realprojects/ (its README says what a folder holds). Each project runs
as a new user would run it, with no hand-written envd.yaml; a project that cannot work on
this host says so in `expect-error`, and the test asserts envd's message instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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


def test_computed_setup_metadata_comes_from_a_container_and_its_files_keep_the_lock(
    shared: Envctl, tmp_path: Path
) -> None:
    # GitPython's setup.py reads its version and install_requires from files when it runs:
    # `lock` runs the legacy backend in a throwaway container (never on the host), records
    # what it computed, and a change to requirements.txt makes the lock stale.
    directory = tmp_path / "gitpython"
    shutil.copytree(CORPUS / "gitpython-setup-py-reads-requirements" / "project", directory)
    shared.ok("init", str(directory))
    name = yaml.safe_load((directory / "envd.yaml").read_text())["name"]
    proc = shared("lock", str(directory))
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert "computed in a container by setuptools.build_meta:__legacy__" in said, said
    lock = json.loads((directory / "envd.lock").read_text())
    computed = lock["computed"]
    assert (computed["name"], computed["version"]) == ("GitPython", "3.1.20")
    assert computed["requires"][0] == "gitdb<5,>=4.0.1"  # as setuptools writes it
    # setup.py, and the project files it names literally (its build_py names git/__init__.py)
    assert {f.split(" ")[0] for f in computed["files"]} == {
        "setup.py",
        "VERSION",
        "requirements.txt",
        "test-requirements.txt",
        "git/__init__.py",
    }
    assert {"gitdb", "smmap"} <= {p["name"] for p in lock["python"]}
    assert "typing-extensions" not in {p["name"] for p in lock["python"]}  # its marker
    assert not list(directory.glob("*.egg-info"))  # setup.py never ran here
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=envd.project={name}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert left.stdout.strip() == ""  # the container is removed
    again = shared("lock", str(directory))  # in sync: nothing runs again
    assert "computed in a container" not in again.stdout + again.stderr
    # re-locked for another reason, with setup.py's files unchanged: the lock's metadata is
    # kept, nothing runs again
    spec = directory / "envd.yaml"
    document = yaml.safe_load(spec.read_text())
    document["packages"] = [*(document.get("packages") or []), "idna"]
    spec.write_text(yaml.safe_dump(document, sort_keys=False))
    more = shared("lock", str(directory))
    assert more.returncode == 0, more.stderr
    assert "computed in a container" not in more.stdout + more.stderr
    kept = json.loads((directory / "envd.lock").read_text())
    assert kept["computed"] == computed and "idna" in {p["name"] for p in kept["python"]}
    requirements = directory / "requirements.txt"
    requirements.write_text(requirements.read_text() + "six\n")
    stale = shared("build", str(directory))
    assert stale.returncode != 0
    assert "requirements.txt changed, which setup.py's computed metadata" in stale.stderr
    shared.ok("lock", str(directory))
    relocked = json.loads((directory / "envd.lock").read_text())
    assert "six" in relocked["computed"]["requires"]
    assert "six" in {p["name"] for p in relocked["python"]}
