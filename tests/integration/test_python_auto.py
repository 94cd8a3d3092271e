"""`python: auto` and a fixed Python that cannot work: real locks against PyPI.

PyYAML 5.4.1 has wheels for CPython 3.6-3.9 only (and a small sdist envd will not build), so
of the Pythons envd builds (3.13 trixie, 3.11 bookworm, 3.9 bullseye) only 3.9 fits it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration


def project(root: Path, name: str, head: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "envd.yaml").write_text(f"version: 1\nname: {name}\n{head}packages: [pyyaml==5.4.1]\n")
    return path


def test_python_auto_picks_the_newest_python_with_wheels_and_says_why(shared: Envctl) -> None:
    path = project(shared.cwd, "auto-old-pin", "python: auto\n")
    proc = shared("lock", str(path))
    assert proc.returncode == 0, proc.stderr
    assert (
        "chose Python 3.9 (debian bullseye) for `python: auto`: "
        "pyyaml==5.4.1 has no wheel for 3.13 or 3.11"
    ) in proc.stderr
    data = json.loads((path / "envd.lock").read_text())
    assert data["base"]["kind"] == "debian" and data["base"]["suite"] == "bullseye"
    assert data["target"]["python_version"].startswith("3.9.")
    assert data["target"]["platform"] == "manylinux_2_31_x86_64"
    assert {(p["name"], p["version"]) for p in data["python"]} == {("pyyaml", "5.4.1")}
    # in sync afterwards: nothing re-chosen, nothing rewritten
    before = (path / "envd.lock").read_bytes()
    assert "unchanged" in shared.ok("lock", str(path))
    assert (path / "envd.lock").read_bytes() == before
    assert shared("lock", "--check", str(path)).returncode == 0


def test_a_fixed_python_the_pins_cannot_use_names_the_pythons_and_bases_that_work(
    shared: Envctl,
) -> None:
    path = project(shared.cwd, "fixed-old-pin", 'base: {debian: bookworm}\npython: "3.11"\n')
    proc = shared("lock", str(path))
    assert proc.returncode == 1, proc.stderr
    assert (
        "pyyaml==5.4.1 has wheels for Python 3.6-3.9, not for the project's Python 3.11.2"
    ) in proc.stderr
    assert "has no usable wheels" in proc.stderr  # uv's own explanation follows
    assert "envd can build 3.9 (base: {debian: bullseye})" in proc.stderr
    assert "python: auto" in proc.stderr
    assert not (path / "envd.lock").exists()


def test_python_auto_with_pins_that_fit_everything_takes_the_newest(shared: Envctl) -> None:
    path = shared.cwd / "auto-new-pin"
    path.mkdir()
    (path / "envd.yaml").write_text(
        "version: 1\nname: auto-new-pin\npython: auto\npackages: [six]\n"
    )
    proc = shared("lock", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "chose Python 3.13 (debian trixie) for `python: auto`: the newest" in proc.stderr
    data = json.loads((path / "envd.lock").read_text())
    assert data["base"]["suite"] == "trixie"
    assert data["target"]["python_version"].startswith("3.13.")
