"""The layer rules (setup.cfg's import-linter contracts) hold, and would catch a break."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)},
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and their contracts, to break on purpose."""
    for package in ("envd", "cli"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tree: Path) -> None:
    plan = tree / "envd" / "model" / "plan.py"
    plan.write_text(plan.read_text() + "\nfrom envd.services import builder  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "envd.model.plan -> envd.services.builder" in result.stdout


def test_a_circle_between_services_is_refused(tree: Path) -> None:
    runs = tree / "envd" / "services" / "runs.py"
    runs.write_text(runs.read_text() + "\nfrom envd.services import entering  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "no import circles" in result.stdout and "BROKEN" in result.stdout


def test_the_cli_cannot_reach_into_the_daemon(tree: Path) -> None:
    output = tree / "cli" / "output.py"
    output.write_text(output.read_text() + "\nfrom envd.services import images  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "cli.output -> envd.services.images" in result.stdout
