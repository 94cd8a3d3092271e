"""Projects and specs through the real envctl: init, add, ls, rm, validate, name clashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import Envctl
from tests.unit.model.test_spec_corpus import BAD, expectations

pytestmark = pytest.mark.integration


def test_every_malformed_spec_exits_1_with_its_line(shared: Envctl, tmp_path: Path) -> None:
    for path in BAD:
        expect = expectations(path)
        project = tmp_path / path.stem / expect.get("dir", "project")
        project.mkdir(parents=True)
        shutil.copy(path, project / "envd.yaml")
        proc = shared("validate", str(project))
        assert proc.returncode == 1, (path.name, proc.stderr)
        assert f"envd.yaml:{expect['expect-line']}" in proc.stderr, (path.name, proc.stderr)
        assert expect["expect"] in proc.stderr and "Traceback" not in proc.stderr
        assert f": {expect['expect-key']}: " in proc.stderr, (path.name, proc.stderr)


def test_init_lists_and_never_overwrites(shared: Envctl, tmp_path: Path) -> None:
    listing = shared.ok("init", "--list")
    for name in ("default", "sklearn", "pytorch-cpu", "pytorch-cuda", "jupyter"):
        assert name in listing
    target = tmp_path / "churn"
    out = shared.ok("init", "--template", "sklearn", str(target))
    assert "registered project `churn`" in out
    assert "scikit-learn" in (target / "envd.yaml").read_text()
    (target / "envd.yaml").write_text((target / "envd.yaml").read_text() + "# mine\n")
    proc = shared("init", str(target))
    assert proc.returncode == 1 and "never overwrites" in proc.stderr
    assert (target / "envd.yaml").read_text().endswith("# mine\n")
    proc = shared("init", "--template", "nope", str(tmp_path / "x"))
    assert proc.returncode == 4 and "no template named `nope`" in proc.stderr


def test_add_ls_rm_and_name_clash(shared: Envctl, tmp_path: Path) -> None:
    first, second = tmp_path / "one" / "same", tmp_path / "two" / "same"
    for path in (first, second):
        path.mkdir(parents=True)
        (path / "envd.yaml").write_text("base: {debian: bookworm}\n")
    assert "registered project `same`" in shared.ok("add", str(first))
    proc = shared("add", str(second))
    assert proc.returncode == 1
    assert "already used by" in proc.stderr and "name:" in proc.stderr
    names = {p["name"]: p["path"] for p in json.loads(shared.ok("--json", "ls"))["projects"]}
    assert names["same"] == str(first)
    assert "is untouched" in shared.ok("rm", "same")
    assert (first / "envd.yaml").exists()
    assert "same" not in {p["name"] for p in json.loads(shared.ok("--json", "ls"))["projects"]}
    proc = shared("rm", "same")
    assert proc.returncode == 4


def test_a_directory_without_a_spec(shared: Envctl, tmp_path: Path) -> None:
    proc = shared("add", str(tmp_path))
    assert proc.returncode == 4 and "has no envd.yaml" in proc.stderr
    assert "envctl init" in proc.stderr
