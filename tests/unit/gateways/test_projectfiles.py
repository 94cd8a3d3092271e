"""Bounded reads of project files: type, size and encoding are checked before anything is parsed.

Limits are passed small here; nothing allocates or reads more than a few kilobytes.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.errors import LockError, SpecError
from envd.gateways import projectfiles
from envd.gateways.projectfiles import load_spec, read_bounded, read_lock
from envd.model.lockfile import dumps
from tests.unit.model.test_lockfile import make_lock

SPEC = "base: {debian: bookworm}\n"


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO opened without O_NONBLOCK) fails the test instead of hanging."""

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("a project file read blocked")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make(tmp_path: Path, spec: str = SPEC, **files: str | bytes) -> Path:
    project = tmp_path / "proj"
    project.mkdir(parents=True)
    (project / "envd.yaml").write_text(spec)
    for name, content in files.items():
        path = project / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return project


def refused(project: Path, **limits: int) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(project, **limits)
    return info.value


# ---------------------------------------------------------------- envd.yaml


def test_a_regular_spec_reads(tmp_path: Path) -> None:
    assert load_spec(make(tmp_path)).name == "proj"


def test_fifo_spec_is_refused_without_blocking(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    os.mkfifo(project / "envd.yaml")
    err = refused(project)
    assert "named pipe" in err.message
    assert err.file == str(project / "envd.yaml")


def test_symlink_to_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").symlink_to(tmp_path / "pipe")
    assert "named pipe" in refused(project).message


def test_dev_zero_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").symlink_to("/dev/zero")
    err = refused(project, spec_limit=64)
    assert "character device" in err.message


def test_directory_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    (project / "envd.yaml").mkdir(parents=True)
    assert "a directory" in refused(project).message


def test_socket_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(project / "envd.yaml"))
        assert "a socket" in refused(project).message
    finally:
        server.close()


def test_dangling_symlink_is_named(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").symlink_to(tmp_path / "gone.yaml")
    assert "dangling symlink" in refused(project).message


def test_size_limit(tmp_path: Path) -> None:
    text = SPEC + "#" * (100 - len(SPEC) - 1) + "\n"
    assert len(text) == 100
    project = make(tmp_path, text)
    assert load_spec(project, spec_limit=100).name == "proj"
    err = refused(project, spec_limit=99)
    assert "larger than the limit of 99 bytes" in err.message


def test_default_limits_are_documented_sizes() -> None:
    assert projectfiles.SPEC_MAX_BYTES == 256 * 1024
    assert projectfiles.REQUIREMENTS_MAX_BYTES == 1024 * 1024
    assert projectfiles.LOCK_MAX_BYTES == 32 * 1024 * 1024


def test_a_file_that_lies_about_its_size_is_read_only_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # procfs files say st_size 0 and hold more: the reader must stop at limit + 1 bytes.
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 200
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(projectfiles._NotReadable, match="larger than the limit of 100 bytes"):
        read_bounded(status, 100)
    assert sum(reads) == 101


def test_spec_symlinked_to_an_endless_proc_file_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").symlink_to("/proc/self/status")
    assert "outside the project" in refused(project, spec_limit=64).message


def test_non_utf8_spec_names_file_and_line(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").write_bytes(b'base: {debian: bookworm}\npython: "3.11"\n# caf\xe9\n')
    err = refused(project)
    assert err.file == str(project / "envd.yaml")
    assert err.line == 3
    assert "not UTF-8" in err.message and "0xe9" in err.message
    assert err.hint and "UTF-8" in err.hint


# ---------------------------------------------------------------- requirements


def test_requirements_list_reads_every_file_in_order(tmp_path: Path) -> None:
    project = make(
        tmp_path,
        SPEC + "requirements: [a.txt, sub/b.txt]\n",
        **{"a.txt": "six\n"},
    )
    (project / "sub").mkdir()
    (project / "sub" / "b.txt").write_text("idna==3.7\n")
    spec = load_spec(project)
    assert spec.requirements == ("six", "idna==3.7")
    assert spec.requirements_files == ("a.txt", "sub/b.txt")
    assert spec.requirements_file == "a.txt"


def test_non_utf8_requirements_name_the_absolute_file_and_line(tmp_path: Path) -> None:
    project = make(
        tmp_path, SPEC + "requirements: requirements.txt\n", **{"requirements.txt": b"six\n\xff\n"}
    )
    err = refused(project)
    assert err.file == str(project / "requirements.txt")
    assert err.line == 2
    assert "not UTF-8" in err.message


def test_fifo_requirements_are_refused_at_the_spec_line(tmp_path: Path) -> None:
    project = make(tmp_path, SPEC + "requirements: req.txt\n")
    os.mkfifo(project / "req.txt")
    err = refused(project)
    assert err.file == str(project / "envd.yaml")
    assert (err.line, err.key_path) == (2, "requirements")
    assert "named pipe" in err.message


def test_requirements_size_limit(tmp_path: Path) -> None:
    project = make(tmp_path, SPEC + "requirements: r.txt\n", **{"r.txt": "six\n" * 50})
    assert len(load_spec(project, requirements_limit=200).requirements) == 50
    err = refused(project, requirements_limit=199)
    assert "larger than the limit of 199 bytes" in err.message and err.key_path == "requirements"


def test_requirements_symlinked_outside_the_project_are_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("six\n")
    project = make(tmp_path, SPEC + "requirements: [ok.txt, r.txt]\n", **{"ok.txt": "idna\n"})
    (project / "r.txt").symlink_to(tmp_path / "outside.txt")
    err = refused(project)
    assert "outside the project" in err.message
    assert (err.line, err.key_path) == (2, "requirements[1]")


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/hostname", "sub/../../x.txt"])
def test_requirements_paths_escaping_the_project_are_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "outside.txt").write_text("six\n")
    err = refused(make(tmp_path, SPEC + f"requirements: {path}\n"))
    assert err.key_path == "requirements" and err.line == 2


def test_requirements_directory_is_refused(tmp_path: Path) -> None:
    project = make(tmp_path, SPEC + "requirements: reqs\n")
    (project / "reqs").mkdir()
    err = refused(project)
    assert "a directory" in err.message and err.key_path == "requirements"


# ---------------------------------------------------------------- files the spec names


def test_setup_files_must_exist_inside_the_project(tmp_path: Path) -> None:
    spec = SPEC + "setup:\n  - {run: bash postBuild, files: [postBuild]}\n"
    err = refused(make(tmp_path, spec))
    assert err.key_path == "setup[0].files[0]" and err.line == 3
    project = make(tmp_path / "again", spec, postBuild="echo hi\n")
    steps = load_spec(project).setup_steps
    assert steps[0].run == "bash postBuild" and steps[0].files == ("postBuild",)


def test_setup_file_symlinked_outside_is_not_a_project_file(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("echo hi\n")
    project = make(tmp_path, SPEC + "setup: [{run: sh x, files: [x]}]\n")
    (project / "x").symlink_to(tmp_path / "elsewhere")
    assert refused(project).key_path == "setup[0].files[0]"


def test_project_install_needs_a_pyproject(tmp_path: Path) -> None:
    err = refused(make(tmp_path, SPEC + "project: editable\n"))
    assert err.key_path == "project" and "pyproject.toml" in err.message
    project = make(tmp_path / "again", SPEC + "project: editable\n", **{"pyproject.toml": ""})
    assert load_spec(project).project == "editable"


# ---------------------------------------------------------------- envd.lock


def write_lock(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "envd.lock"
    path.write_bytes(content)
    return path


def test_missing_lock_is_none(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "envd.lock") is None


def test_lock_round_trips(tmp_path: Path) -> None:
    lock = make_lock()
    assert read_lock(write_lock(tmp_path, dumps(lock).encode())) == lock


def test_non_utf8_lock_names_file_line_and_a_fix_that_works(tmp_path: Path) -> None:
    text = dumps(make_lock()).encode()
    path = write_lock(tmp_path, text.replace(b'"envd_version"', b'"envd_\xc3version"', 1))
    with pytest.raises(LockError) as info:
        read_lock(path)
    line = text.split(b'"envd_version"')[0].count(b"\n") + 1
    assert f"{path}:{line}:" in info.value.message and "not UTF-8" in info.value.message
    # `envctl lock` refuses to read a corrupt lock too, so the fix must remove it first
    assert info.value.hint == (f"delete {path} and run `envctl lock {tmp_path}` to write it again")


def test_corrupt_lock_hint_says_delete_first(tmp_path: Path) -> None:
    with pytest.raises(LockError) as info:
        read_lock(write_lock(tmp_path, b"{not json"))
    assert info.value.hint and info.value.hint.startswith(f"delete {tmp_path / 'envd.lock'}")


def test_fifo_lock_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "envd.lock")
    with pytest.raises(LockError, match="named pipe"):
        read_lock(tmp_path / "envd.lock")


def test_lock_size_limit(tmp_path: Path) -> None:
    content = dumps(make_lock()).encode()
    path = write_lock(tmp_path, content)
    assert read_lock(path, limit=len(content)) is not None
    with pytest.raises(LockError, match="larger than the limit"):
        read_lock(path, limit=len(content) - 1)


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    project = make(tmp_path, SPEC + "requirements: r.txt\nsetup: [{run: sh x, files: [x]}]\n")
    (project / "r.txt").symlink_to(project / "r.txt")
    assert refused(project).key_path == "requirements"
    (project / "r.txt").unlink()
    (project / "r.txt").write_text("six\n")
    (project / "x").symlink_to(project / "x")
    assert refused(project).key_path == "setup[0].files[0]"


def test_newer_lock_hint_offers_both_fixes(tmp_path: Path) -> None:
    text = dumps(make_lock()).replace('"lock_version": 1', '"lock_version": 99')
    assert '"lock_version": 99' in text
    with pytest.raises(LockError) as info:
        read_lock(write_lock(tmp_path, text.encode()))
    assert info.value.hint and info.value.hint.startswith("upgrade envd, or delete")
