"""Atomic writes: readers see the old file or the new one, never half."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from envd.gateways import files


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "envd.lock"
    files.write_atomic(target, "one\n")
    files.write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert os.listdir(tmp_path) == ["envd.lock"]


def test_write_atomic_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "envd.lock"
    target.write_text("old\n")
    target.chmod(0o640)
    files.write_atomic(str(target), "new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "envd.lock"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        files.write_atomic(target, "half written \udc80 never lands")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["envd.lock"]


def test_write_atomic_leaves_the_old_file_when_sync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "envd.lock"
    target.write_text("old\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["envd.lock"]


def test_a_folder_made_anew_under_the_same_path_has_another_identity(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    first = files.folder_identity(project)
    assert first == files.folder_identity(str(project)) and first.count(":") == 1
    project.rename(tmp_path / "p.old")
    project.mkdir()
    assert files.folder_identity(project) not in ("", first)
    assert files.folder_identity(tmp_path / "absent") == ""
