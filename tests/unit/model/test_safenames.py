"""Names from untrusted input: one component, or a relative path confined under its root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from envd.gateways.files import open_beneath
from envd.model import safenames
from envd.model.safenames import UnsafeName


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "a/b", "/etc/passwd", "..\\x", "a\x00b", "a\nb", "x" * 256, "\x7f"],
)
def test_a_component_that_would_leave_its_folder_is_refused(name: str) -> None:
    with pytest.raises(UnsafeName) as err:
        safenames.component(name, "envd.lock: numpy's file name")
    assert "envd.lock: numpy's file name" in err.value.message
    assert err.value.exit_code == 9


@pytest.mark.parametrize("name", ["numpy-2.0-py3-none-any.whl", "a b", "ü", ".hidden", "x" * 255])
def test_plain_names_pass(name: str) -> None:
    assert safenames.component(name, "w") == name


@pytest.mark.parametrize(
    "path", ["/abs", "../x", "a/../../x", "a/..", "", ".", "./", "a/\x00", "/".join(["d"] * 300)]
)
def test_a_relative_path_that_climbs_or_is_absolute_is_refused(path: str) -> None:
    with pytest.raises(UnsafeName):
        safenames.relative(path, "archive member")


def test_relative_paths_are_normalised() -> None:
    assert safenames.relative("./a//b/c.txt", "w") == PurePosixPath("a/b/c.txt")
    assert safenames.beneath("/root", "a/b", "w") == Path("/root/a/b")
    assert safenames.child("/root", "f", "w") == Path("/root/f")


def test_open_beneath_follows_no_link_on_the_way(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "d" / "f").write_text("inside")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret", root / "d" / "last")

    fd = open_beneath(root, PurePosixPath("d/f"))
    try:
        assert os.read(fd, 100) == b"inside"
    finally:
        os.close(fd)
    for rel in ("link/secret", "d/last"):
        with pytest.raises(OSError):
            os.close(open_beneath(root, PurePosixPath(rel)))


def test_open_beneath_makes_folders_when_asked(tmp_path: Path) -> None:
    fd = open_beneath(
        tmp_path, PurePosixPath("a/b/c"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, make_dirs=True
    )
    os.write(fd, b"x")
    os.close(fd)
    assert (tmp_path / "a" / "b" / "c").read_bytes() == b"x"
    with pytest.raises(ValueError):
        open_beneath(tmp_path, PurePosixPath("../x"))
