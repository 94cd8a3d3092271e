"""A step's layer summarised from its container's changes merges to the manifest its tar gives."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO

from envd.model.content import content_hash, merge, summarise_layer
from envd.model.inventory import integrity_problems
from envd.model.layerchanges import ADDED, DELETED, MODIFIED, archive_roots, summarise_changes
from tests.unit.model.test_content import M, tar_bytes

RECORD = (
    "pkg/__init__.py,sha256=MaUOWoQ_NA_AhNlKwuHwzoCafFRcbacGj9CzQp7hxGI,8\n"
    "pkg-1.0.dist-info/METADATA,,\npkg-1.0.dist-info/RECORD,,\n"
)
LOWER = [
    M("opt/", kind="dir", mode=0o755),
    M("opt/venv/", kind="dir", mode=0o755),
    M("opt/venv/bin/", kind="dir", mode=0o755),
    M("opt/venv/bin/python", kind="symlink", target="/usr/bin/python3"),
    M("opt/venv/site/", kind="dir", mode=0o755),
    M("opt/venv/site/old.py", b"old = 1\n"),
    M("opt/venv/pyvenv.cfg", b"home = /usr/bin\n"),
]
# What a commit writes: the changed files, and the folders above them, changed or not.
LAYER = [
    M("opt/", kind="dir", mode=0o755),
    M("opt/venv/", kind="dir", mode=0o755),
    M("opt/venv/bin/", kind="dir", mode=0o755),
    M("opt/venv/bin/tool", b"#!/opt/venv/bin/python\n", mode=0o755),
    M("opt/venv/bin/tool2", kind="hardlink", target="opt/venv/bin/tool"),
    M("opt/venv/pyvenv.cfg", b"home = /usr/bin\nversion = 3.11\n"),
    M("opt/venv/site/", kind="dir", mode=0o775),
    M("opt/venv/site/pkg/", kind="dir", mode=0o755),
    M("opt/venv/site/pkg/__init__.py", b"pkg = 1\n"),
    M("opt/venv/site/pkg-1.0.dist-info/", kind="dir", mode=0o755),
    M("opt/venv/site/pkg-1.0.dist-info/METADATA", b"Name: pkg\nVersion: 1.0\n\n"),
    M("opt/venv/site/pkg-1.0.dist-info/RECORD", RECORD.encode()),
]
# What the engine lists: /opt and /opt/venv are unchanged folders, so they are not listed.
CHANGES = [
    ("/opt/venv/bin", MODIFIED),
    ("/opt/venv/bin/tool", ADDED),
    ("/opt/venv/bin/tool2", ADDED),
    ("/opt/venv/pyvenv.cfg", MODIFIED),
    ("/opt/venv/site", MODIFIED),
    ("/opt/venv/site/pkg", ADDED),
    ("/opt/venv/site/pkg/__init__.py", ADDED),
    ("/opt/venv/site/pkg-1.0.dist-info", ADDED),
    ("/opt/venv/site/pkg-1.0.dist-info/METADATA", ADDED),
    ("/opt/venv/site/pkg-1.0.dist-info/RECORD", ADDED),
]


def container(files: list[M]) -> tuple[Callable[[str], IO[bytes]], list[str]]:
    """The archive API of a container whose merged filesystem is `files`: a path's tar, its
    members named from the path's last component, as the engine names them."""
    opened: list[str] = []

    def open_archive(path: str) -> IO[bytes]:
        opened.append(path)
        rel = path.strip("/")
        parent = rel.rpartition("/")[0]
        cut = len(parent) + 1 if parent else 0
        members = []
        for m in files:
            name = str(m.name).rstrip("/")
            if name == rel or name.startswith(rel + "/"):
                target = m.target[cut:] if m.kind == "hardlink" else m.target
                members.append(M(str(m.name)[cut:], m.data, m.kind, m.mode, target))
        return io.BytesIO(tar_bytes(members))

    return open_archive, opened


def merged_view() -> list[M]:
    layer = {str(m.name).rstrip("/"): m for m in LAYER}
    return [layer.pop(str(m.name).rstrip("/"), m) for m in LOWER] + list(layer.values())


def test_a_layer_from_its_changes_hashes_as_its_tar_does() -> None:
    open_archive, opened = container(merged_view())
    lower = summarise_layer(io.BytesIO(tar_bytes(LOWER)))
    from_tar = merge([lower, summarise_layer(io.BytesIO(tar_bytes(LAYER)))])

    summary = summarise_changes(CHANGES, open_archive)

    assert summary is not None
    from_changes = merge([lower, summary])
    assert from_changes == from_tar
    assert content_hash(from_changes) == content_hash(from_tar)
    assert "/opt/venv/site/old.py" not in summary.entries  # (in the folder's archive, unchanged)
    assert from_changes.entries["/opt/venv/bin/tool2"] == from_tar.entries["/opt/venv/bin/tool"]
    assert integrity_problems(from_changes) == []  # RECORD facts come from the same bytes
    assert opened == [  # (each folder's own entry, then its changed paths)
        "/opt/venv/bin",
        "/opt/venv/bin/tool",
        "/opt/venv/bin/tool2",
        "/opt/venv/pyvenv.cfg",
        "/opt/venv/site",
        "/opt/venv/site/pkg",
        "/opt/venv/site/pkg-1.0.dist-info",
    ]


def test_a_deletion_is_read_from_the_layer_bytes() -> None:
    open_archive, opened = container(merged_view())
    assert summarise_changes([*CHANGES, ("/opt/venv/site/old.py", DELETED)], open_archive) is None
    assert opened == []


def test_a_mount_inside_a_changed_folder_is_read_from_the_layer_bytes() -> None:
    open_archive, _ = container(merged_view())
    assert summarise_changes(CHANGES, open_archive, mounts=["/opt/venv/site/pkg/c"]) is None
    # (a folder read for its own entry alone shows nothing mounted in it)
    assert summarise_changes(CHANGES, open_archive, mounts=["/opt/venv/site/c"]) is not None
    assert summarise_changes(CHANGES, open_archive, mounts=["/opt"]) is None
    assert summarise_changes(CHANGES, open_archive, mounts=["/tmp", "/mnt"]) is not None


def test_a_changed_path_the_archive_lacks_is_read_from_the_layer_bytes() -> None:
    open_archive, _ = container(merged_view())
    assert summarise_changes([*CHANGES, ("/opt/venv/site/sock", ADDED)], open_archive) is None


def test_a_hard_link_to_a_file_outside_the_layer_is_read_from_the_layer_bytes() -> None:
    files = [
        *merged_view(),
        M("opt/venv/site/old2.py", kind="hardlink", target="opt/venv/site/old.py"),
    ]
    open_archive, _ = container(files)
    assert summarise_changes([*CHANGES, ("/opt/venv/site/old2.py", ADDED)], open_archive) is None


def test_a_folder_with_many_changes_is_read_whole() -> None:
    many = [(f"/opt/venv/site/p{i}.py", ADDED) for i in range(8)]
    files = [*merged_view(), *(M(f"opt/venv/site/p{i}.py", b"%d" % i) for i in range(8))]
    open_archive, opened = container(files)
    lower = summarise_layer(io.BytesIO(tar_bytes(LOWER)))
    layer = [*LAYER, *(M(f"opt/venv/site/p{i}.py", b"%d" % i) for i in range(8))]
    summary = summarise_changes([*CHANGES, *many], open_archive)
    assert summary is not None
    assert merge([lower, summary]) == merge([lower, summarise_layer(io.BytesIO(tar_bytes(layer)))])
    assert "/opt/venv/site" in opened and "/opt/venv/site/pkg" not in opened
    assert "/opt/venv/site/old.py" not in summary.entries


def test_roots_are_the_highest_changed_paths() -> None:
    assert archive_roots([("/a", ADDED), ("/a-b", ADDED), ("/a/c", ADDED)]) == [
        ("/a", True),
        ("/a-b", True),
    ]
    assert archive_roots([("/usr", MODIFIED), ("/usr/sbin/init", ADDED)]) == [
        ("/usr", False),
        ("/usr/sbin/init", True),
    ]
    assert archive_roots([("/", MODIFIED)]) is None
    assert archive_roots([(f"/f{i}", ADDED) for i in range(65)]) is None
    assert archive_roots([("/tmp", MODIFIED)], mounts=["/tmp/cache"]) == [("/tmp", False)]
    assert archive_roots([("/tmp/cache", MODIFIED)], mounts=["/tmp/cache"]) is None
    assert archive_roots([]) == []
