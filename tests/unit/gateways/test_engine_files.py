"""The archive envd streams into a project volume (no engine needed to read it back)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from envd.gateways.engine_files import Outgoing, _tar_stream
from envd.services.projectsync import scan_host


def test_the_stream_is_a_tar_of_the_files_owned_by_the_caller(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    os.symlink("src/pkg", tmp_path / "pkg")
    listing = scan_host(str(tmp_path))
    files = [Outgoing(p, str(tmp_path / p), s) for p, s in sorted(listing.items())]
    progress: list[tuple[str, int, int]] = []
    data = b"".join(_tar_stream(files, 1000, 1001, lambda *a: progress.append(a)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members)[:2] == ["src", "src/pkg"]  # folders first, so they are the caller's
        assert all((m.uid, m.gid) == (1000, 1001) for m in members.values())
        assert members["src"].isdir() and members["pkg"].issym()
        assert members["pkg"].linkname == "src/pkg"
        assert members["run.sh"].mode == 0o755
        assert members["run.sh"].mtime == listing["run.sh"].mtime_ns // 10**9
        for name in ("src/pkg/m.py", "big.bin", "run.sh"):
            extracted = tar.extractfile(members[name])
            assert extracted is not None
            assert extracted.read() == (tmp_path / name).read_bytes()
    big = [p for p in progress if p[0] == "big.bin"]
    assert len(big) == 3 and big[-1] == ("big.bin", 3 << 20, 3 << 20)  # one per MiB sent


def test_a_file_that_shrank_since_the_listing_keeps_the_archive_readable(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("a" * 5000)
    listing = scan_host(str(tmp_path))
    (tmp_path / "log.txt").write_text("short")
    (tmp_path / "after.txt").write_text("next")
    listing |= {"after.txt": scan_host(str(tmp_path))["after.txt"]}
    files = [Outgoing(p, str(tmp_path / p), s) for p, s in sorted(listing.items())]
    with tarfile.open(fileobj=io.BytesIO(b"".join(_tar_stream(files, 0, 0, None)))) as tar:
        after = tar.extractfile("after.txt")
        assert after is not None and after.read() == b"next"


def test_a_file_gone_before_it_is_sent_is_left_out_of_the_archive(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("y")
    listing = scan_host(str(tmp_path))
    (tmp_path / "a").unlink()
    sent: set[str] = set()
    files = [Outgoing(p, str(tmp_path / p), s) for p, s in sorted(listing.items())]
    with tarfile.open(fileobj=io.BytesIO(b"".join(_tar_stream(files, 0, 0, None, sent)))) as tar:
        assert tar.getnames() == ["b"]
    assert sent == {"b"}


# ---------------------------------------------------------------- reading archives back


def archive(*members: tuple[str, bytes | str]) -> bytes:
    """A tar: (name, bytes) a file, (name, "=target") a hard link to an earlier member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.LNKTYPE, content.removeprefix("=")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


class FakeApi:
    """get_archive as the engine answers it: a folder's archive holds a hard-linked file's
    second name as a LNKTYPE member; the file asked for alone comes as a regular file."""

    def __init__(self, archives: dict[str, bytes]) -> None:
        self.archives = archives
        self.asked: list[str] = []

    def get_archive(self, container: str, path: str, chunk_size: int) -> tuple[object, dict]:
        self.asked.append(path)
        data = self.archives[path]
        return iter([data[i : i + 512] for i in range(0, len(data), 512)]), {}


def test_hard_linked_files_come_back_as_files() -> None:
    from types import SimpleNamespace

    from envd.gateways.engine_files import EngineFiles

    api = FakeApi(
        {
            "/w/out": archive(("out/a", b"same data"), ("out/b", "=out/a"), ("out/c", "=out/a")),
            "/w/out/b": archive(("b", b"same data")),
            "/w/out/c": archive(("c", b"same data")),
        }
    )
    files = EngineFiles(SimpleNamespace(client=SimpleNamespace(api=api)))  # type: ignore[arg-type]
    got: dict[str, bytes] = {}

    def on_member(rel: str, member: tarfile.TarInfo, body: object) -> None:
        assert member.isfile() and body is not None
        got[rel] = body.read()  # type: ignore[attr-defined]

    files.read("cid", "/w", [("out", frozenset({"out/a", "out/b", "out/c"}))], on_member)
    assert got == {"out/a": b"same data", "out/b": b"same data", "out/c": b"same data"}
    assert api.asked == ["/w/out", "/w/out/b", "/w/out/c"]
