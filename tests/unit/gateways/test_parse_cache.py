"""The kept parses of envd.yaml and envd.lock: an unchanged file is not parsed again, and any
edit is seen at once, even one that keeps the size and the timestamp (the bytes decide)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envd.errors import LockError, SpecError
from envd.gateways import projectfiles
from envd.gateways.projectfiles import load_spec, read_lock
from envd.model.lockfile import dumps
from tests.unit.model.test_lockfile import make_lock

SPEC = "version: 1\nname: cached\nbase: {debian: bookworm}\npackages: [six]\n"


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    projectfiles.forget_parses()
    yield
    projectfiles.forget_parses()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources parsed (envd.yaml by parse_spec, envd.lock by loads), in order."""
    seen: list[str] = []
    parse_spec, loads = projectfiles.loading.parse_spec, projectfiles.loading.loads

    def counting_parse(text: str, **kw: Any) -> Any:
        seen.append("spec")
        return parse_spec(text, **kw)

    def counting_loads(text: str, source: str = "") -> Any:
        seen.append("lock")
        return loads(text, source)

    monkeypatch.setattr(projectfiles.loading, "parse_spec", counting_parse)
    monkeypatch.setattr(projectfiles.loading, "loads", counting_loads)
    return seen


def rewrite_keeping_stat(path: Path, text: str) -> None:
    """New bytes of the same size, in place, with the old mtime: what a stat check misses."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    with open(path, "r+") as file:  # same inode
        file.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def project(tmp_path: Path, spec: str = SPEC, **files: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True, exist_ok=True)
    (root / "envd.yaml").write_text(spec)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


# ---------------------------------------------------------------- envd.yaml


def test_an_unchanged_spec_is_parsed_once(tmp_path: Path, parses: list[str]) -> None:
    root = project(tmp_path)
    first = load_spec(root)
    assert load_spec(root) is first and load_spec(str(root)) is first
    assert parses == ["spec"]


def test_an_edit_of_the_same_size_and_mtime_is_seen(tmp_path: Path, parses: list[str]) -> None:
    root = project(tmp_path)
    assert load_spec(root).packages == ("six",)
    rewrite_keeping_stat(root / "envd.yaml", SPEC.replace("six", "abc"))
    assert load_spec(root).packages == ("abc",)
    assert parses == ["spec", "spec"]


def test_an_edit_that_breaks_the_spec_is_reported(tmp_path: Path) -> None:
    root = project(tmp_path)
    load_spec(root)
    (root / "envd.yaml").write_text(SPEC + "gpu: sometimes\n")
    with pytest.raises(SpecError):
        load_spec(root)
    (root / "envd.yaml").write_text(SPEC)  # fixed again: parsed again, fine
    assert load_spec(root).name == "cached"


def test_a_requirements_file_edit_is_seen(tmp_path: Path, parses: list[str]) -> None:
    spec = SPEC + "requirements: requirements.txt\n"
    root = project(tmp_path, spec, **{"requirements.txt": "idna==3.7\n"})
    assert load_spec(root).requirements == ("idna==3.7",)
    assert load_spec(root).requirements == ("idna==3.7",)
    rewrite_keeping_stat(root / "requirements.txt", "idna==3.8\n")
    assert load_spec(root).requirements == ("idna==3.8",)
    assert parses == ["spec", "spec"]


def test_a_requirements_file_removed_is_an_error_not_the_old_spec(tmp_path: Path) -> None:
    spec = SPEC + "requirements: requirements.txt\n"
    root = project(tmp_path, spec, **{"requirements.txt": "idna==3.7\n"})
    load_spec(root)
    (root / "requirements.txt").unlink()
    with pytest.raises(SpecError, match=r"requirements\.txt"):
        load_spec(root)


def test_a_project_package_appearing_is_seen(tmp_path: Path) -> None:
    """`project: editable` asks whether pyproject.toml exists (is_file): that answer counts."""
    root = project(tmp_path, SPEC + "project: editable\n", **{"pyproject.toml": "[project]\n"})
    assert load_spec(root).project == "editable"
    (root / "pyproject.toml").unlink()
    with pytest.raises(SpecError):
        load_spec(root)


def test_the_limits_are_part_of_the_key(tmp_path: Path) -> None:
    root = project(tmp_path)
    load_spec(root)
    with pytest.raises(SpecError, match="larger than the limit"):
        load_spec(root, spec_limit=10)


def test_at_most_cache_max_projects_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projectfiles.loading, "_CACHE_MAX", 2)
    roots = [project(tmp_path / str(i)) for i in range(3)]
    for root in roots:
        load_spec(root)
    assert len(projectfiles.loading._spec_cache) == 2
    assert str(roots[0].resolve()) not in {key[0] for key in projectfiles.loading._spec_cache}


# ---------------------------------------------------------------- envd.lock


def test_an_unchanged_lock_is_parsed_once(tmp_path: Path, parses: list[str]) -> None:
    path = tmp_path / "envd.lock"
    path.write_text(dumps(make_lock()))
    first = read_lock(path)
    assert first is not None and read_lock(path) is first
    assert parses == ["lock"]


def test_a_lock_edit_of_the_same_size_and_mtime_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "envd.lock"
    text = dumps(make_lock())
    path.write_text(text)
    assert read_lock(path) is not None
    edited = text.replace('"uv_version": "0.13.9"', '"uv_version": "0.13.8"')
    assert edited != text
    rewrite_keeping_stat(path, edited)
    with pytest.raises(LockError):  # a hand edit the integrity record names
        read_lock(path)


def test_a_lock_removed_is_none_and_a_new_one_is_read(tmp_path: Path) -> None:
    path = tmp_path / "envd.lock"
    path.write_text(dumps(make_lock()))
    first = read_lock(path)
    path.unlink()
    assert read_lock(path) is None
    path.write_text(dumps(make_lock(uv_version="0.14.0")))
    again = read_lock(path)
    assert first is not None and again is not None
    assert again.uv_version == "0.14.0" and first.uv_version == "0.13.9"
