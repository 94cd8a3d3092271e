"""The registry through the real envctl and daemon: `name:` changes are followed (runs and
entering keep working), init leaves nothing behind on a clash, a gone project's name is taken
over with a notice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template
from tests.integration.conftest import DefaultBuildCache, from_default_cache

pytestmark = pytest.mark.integration


def names(envctl: Envctl) -> dict[str, str]:
    return {p["name"]: p["path"] for p in json.loads(envctl.ok("--json", "ls"))["projects"]}


def set_name(path: Path, name: str) -> None:
    lines = [x for x in (path / "envd.yaml").read_text().splitlines() if not x.startswith("name:")]
    (path / "envd.yaml").write_text("\n".join([*lines, f"name: {name}"]) + "\n")


def test_a_renamed_project_keeps_its_runs_and_enters(
    shared: Envctl, tmp_path: Path, default_build_cache: DefaultBuildCache
) -> None:
    path = copy_template("default", tmp_path / "renamed")
    set_name(path, "before")
    from_default_cache(shared, path, "before", default_build_cache)
    assert shared.ok("enter", "before", "--", "python", "-c", "print('one')") == "one\n"
    set_name(path, "after")
    # the new name is known at once, and the run recorded under the old one came along
    runs = json.loads(shared.ok("--json", "runs", "after"))["runs"]
    assert [r["project"] for r in runs] == ["after"], runs
    assert "before" not in names(shared) and names(shared)["after"] == str(path)
    assert shared.ok("enter", "after", "--", "python", "-c", "print('two')") == "two\n"
    table = shared.ok("runs", "after").splitlines()[1:]  # the README's `envctl runs PROJECT`
    assert len(table) == 2, table
    assert "one" in table[1] and "two" in table[0]
    shared("stop", "after")

    other = copy_template("default", tmp_path / "other")
    set_name(other, "taken")
    shared.ok("add", str(other))
    set_name(path, "taken")
    proc = shared("build", str(path), "--dry-run")
    assert proc.returncode == 1, proc.stderr
    assert "already used by" in proc.stderr and str(other) in proc.stderr
    current = names(shared)  # nothing renamed
    assert (current["after"], current["taken"]) == (str(path), str(other))
    shared.ok("rm", "after")
    shared.ok("rm", "taken")


def test_init_on_a_clash_writes_nothing(shared: Envctl, tmp_path: Path) -> None:
    first = tmp_path / "a" / "clash"
    shared.ok("init", str(first))
    target = tmp_path / "b" / "clash"
    proc = shared("init", str(target))
    assert proc.returncode == 1 and "already used by" in proc.stderr, proc.stderr
    assert not (target / "envd.yaml").exists() and not (tmp_path / "b").exists()
    assert names(shared)["clash"] == str(first)
    shared.ok("rm", "clash")


def test_a_gone_projects_name_is_taken_over_with_a_notice(shared: Envctl, tmp_path: Path) -> None:
    old = tmp_path / "old" / "moved"
    shared.ok("init", str(old))
    shutil.rmtree(tmp_path / "old")
    new = tmp_path / "new" / "moved"
    proc = shared("init", str(new))
    assert proc.returncode == 0, proc.stderr
    assert "notice:" in proc.stderr and str(old) in proc.stderr and "gone" in proc.stderr
    assert names(shared)["moved"] == str(new)
    shared.ok("rm", "moved")
