"""The hash cache: correct digests, stat-keyed cache hits, racy mtimes, links, snapshots."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from envd.gateways import hashcache
from envd.gateways.hashcache import FileChangingError, HashCache, changed, removed, touched

LATER = 10**12 * 10**9  # a clock far in the future: nothing is racy


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def old(path: Path, seconds: float = 100.0) -> None:
    """Set the mtime well in the past (so the entry is not racy)."""
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.csv").write_bytes(b"a,b\n1,2\n")
    (root / "data" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (root / "data" / "empty").write_bytes(b"")
    for p in (root / "data").rglob("*"):
        if p.is_file():
            old(p)
    return root


def test_digests_are_sha256_of_the_bytes(tree: Path, tmp_path: Path) -> None:
    with HashCache(tmp_path / "db" / "hashes.sqlite") as cache:
        assert cache.hash_tree(tree / "data") == {
            "a.csv": sha(b"a,b\n1,2\n"),
            "empty": sha(b""),
            "sub/b.bin": sha(bytes(range(256)) * 10),
        }
        assert cache.hash_file(tree / "data" / "a.csv") == sha(b"a,b\n1,2\n")
        assert cache.hash_tree(tree / "data" / "a.csv") == {"a.csv": sha(b"a,b\n1,2\n")}


def test_database_is_private(tmp_path: Path) -> None:
    HashCache(tmp_path / "hashes.sqlite").close()
    assert stat.S_IMODE(os.stat(tmp_path / "hashes.sqlite").st_mode) == 0o600


def test_unchanged_files_are_not_read_again(tree: Path, tmp_path: Path) -> None:
    db = tmp_path / "hashes.sqlite"
    with HashCache(db) as cache:
        first = cache.hash_tree(tree)
        assert cache.reads == 3 and cache.hits == 0
    with HashCache(db) as cache:  # the cache persists
        assert cache.hash_tree(tree) == first
        assert cache.reads == 0 and cache.hits == 3


def test_the_cache_trusts_stat_data_like_git(tree: Path, tmp_path: Path) -> None:
    """Same size and mtime, other bytes: a hit (as in git); so the cache is really used."""
    f = tree / "data" / "a.csv"
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        before = cache.hash_file(f)
        st = f.stat()
        f.write_bytes(b"x,y\n3,4\n")  # same length
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_ino == st.st_ino
        assert cache.hash_file(f) == before
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # any stat change: re-read
        assert cache.hash_file(f) == sha(b"x,y\n3,4\n")


def test_changed_content_is_rehashed(tree: Path, tmp_path: Path) -> None:
    f = tree / "data" / "a.csv"
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        cache.hash_file(f)
        f.write_bytes(b"a,b\n1,2\n3,4\n")
        old(f, 50)
        assert cache.hash_file(f) == sha(b"a,b\n1,2\n3,4\n")
        assert cache.reads == 2
        replacement = tree / "data" / "new"
        replacement.write_bytes(b"a,b\n1,9\n")
        old(replacement, 50)
        os.replace(replacement, f)  # same size and mtime, new inode
        assert cache.hash_file(f) == sha(b"a,b\n1,9\n")


def test_racy_entries_are_not_cached(tree: Path, tmp_path: Path) -> None:
    f = tree / "data" / "a.csv"
    mtime = f.stat().st_mtime_ns
    now = [mtime + 500_000_000]  # hashed 0.5 s after the last write: racy
    with HashCache(tmp_path / "hashes.sqlite", clock_ns=lambda: now[0]) as cache:
        cache.hash_file(f)
        cache.hash_file(f)
        assert cache.reads == 2 and cache.hits == 0
        now[0] = mtime + 2_000_000_000  # 2 s later: safe to cache
        cache.hash_file(f)
        cache.hash_file(f)
        assert cache.reads == 3 and cache.hits == 1


def test_a_freshly_written_file_is_racy_with_the_real_clock(tmp_path: Path) -> None:
    f = tmp_path / "fresh"
    f.write_bytes(b"1")
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        cache.hash_file(f)
        cache.hash_file(f)
        assert cache.reads == 2


def test_a_file_changing_while_read_is_not_cached(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tree / "data" / "a.csv"
    real_fstat = os.fstat
    calls = [0]

    def growing_fstat(fd: int) -> os.stat_result:
        calls[0] += 1
        if calls[0] % 2 == 0:  # every second fstat (after the read) sees the file grow
            with open(f, "ab") as out:
                out.write(b"+")
        return real_fstat(fd)

    monkeypatch.setattr(hashcache.os, "fstat", growing_fstat)
    with HashCache(tmp_path / "hashes.sqlite", clock_ns=lambda: LATER, retries=3) as cache:
        with pytest.raises(FileChangingError):
            cache.hash_file(f)
        assert cache.reads == 3
        assert cache.hash_tree(tree / "data").keys() == {"empty", "sub/b.bin"}
        assert any("a.csv" in s and "changing" in s for s in cache.skipped)
        monkeypatch.setattr(hashcache.os, "fstat", real_fstat)
        old(f)
        assert cache.hash_file(f) == sha(f.read_bytes())


def test_symlinks_are_recorded_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key").write_bytes(b"do not read")
    (tree / "data" / "escape").symlink_to(outside)
    (tree / "data" / "alias.csv").symlink_to("a.csv")
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        hashes = cache.hash_tree(tree / "data")
        assert hashes["escape"] == f"symlink:{outside}"
        assert hashes["alias.csv"] == "symlink:a.csv"
        assert not any("key" in k for k in hashes)
        assert cache.hash_file(tree / "data" / "alias.csv") == "symlink:a.csv"


def test_special_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    os.mkfifo(root / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        (root / "file").write_bytes(b"f")
        with HashCache(tmp_path / "hashes.sqlite") as cache:
            assert cache.hash_tree(root) == {"file": sha(b"f")}  # the FIFO did not block
            assert sorted(cache.skipped) == [
                "pipe (not a regular file)",
                "sock (not a regular file)",
            ]
            with pytest.raises(ValueError):
                cache.hash_file(root / "pipe")
    finally:
        sock.close()


def test_max_files_bounds_a_tree(tree: Path, tmp_path: Path) -> None:
    with HashCache(tmp_path / "hashes.sqlite", max_files=2) as cache:
        assert len(cache.hash_tree(tree)) == 2
        assert len(cache.skipped) == 1


def test_snapshot_and_changed_find_a_runs_outputs(tree: Path, tmp_path: Path) -> None:
    (tree / "models").mkdir()
    (tree / "models" / "keep.bin").write_bytes(b"keep")
    (tree / "models" / "old.bin").write_bytes(b"old")
    (tree / "models" / "gone.bin").write_bytes(b"gone")
    paths = ["models/", "metrics.json", "reports"]
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        before = cache.snapshot(tree, paths)
        assert set(before) == {"models/keep.bin", "models/old.bin", "models/gone.bin"}
        # the run:
        (tree / "models" / "old.bin").write_bytes(b"new")
        (tree / "models" / "gone.bin").unlink()
        (tree / "models" / "model.pkl").write_bytes(b"model")
        (tree / "metrics.json").write_text('{"acc": 1}')
        after = cache.snapshot(tree, paths)
        assert changed(before, after) == {
            "metrics.json": sha(b'{"acc": 1}'),
            "models/model.pkl": sha(b"model"),
            "models/old.bin": sha(b"new"),
        }
        assert removed(before, after) == ["models/gone.bin"]
        assert cache.snapshot(tree, ["data"])["data/a.csv"] == sha(b"a,b\n1,2\n")


def test_snapshot_refuses_paths_outside_the_project(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tree / "link").symlink_to(tmp_path / "elsewhere")
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        for bad in ("../x", "/etc", "data/../../x", "link/file"):
            with pytest.raises(ValueError):
                cache.snapshot(tree, [bad])
        assert cache.snapshot(tree, ["link"]) == {"link": f"symlink:{tmp_path / 'elsewhere'}"}


@pytest.mark.slow
def test_200_mb_rehash_is_fast_when_cached(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    block = os.urandom(1 << 20)
    for i in range(200):  # 200 files of 1 MiB, written out (not sparse)
        path = root / f"part-{i:03d}.bin"
        path.write_bytes(block[i:] + block[:i])
        old(path)
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        start = time.perf_counter()
        first = cache.hash_tree(root)
        cold = time.perf_counter() - start
        assert cache.reads == 200
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        start = time.perf_counter()
        again = cache.hash_tree(root)
        warm = time.perf_counter() - start
        assert cache.reads == 0 and cache.hits == 200
    assert again == first
    print(f"\n200 MiB in 200 files: cold {cold * 1000:.0f} ms, cached {warm * 1000:.1f} ms")
    assert warm < 0.05


def test_usable_from_several_threads(tree: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with HashCache(tmp_path / "hashes.sqlite") as cache:
        expected = cache.hash_tree(tree)
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: cache.hash_tree(tree), range(8)))
        assert all(r == expected for r in results)
        assert cache.reads == 3


def test_stat_snapshot_reads_nothing_and_touched_finds_rewrites(tmp_path: Path, tree: Path) -> None:
    cache = HashCache(tmp_path / "h.db", clock_ns=lambda: LATER)
    before = cache.stat_snapshot(tree, ["data/", "missing/"])
    assert set(before) == {"data/a.csv", "data/sub/b.bin", "data/empty"}
    assert cache.reads == 0
    same = tree / "data" / "a.csv"
    same.write_bytes(same.read_bytes())  # the same bytes, written again: touched
    os.utime(same, ns=(1, 1))
    (tree / "data" / "new.txt").write_bytes(b"new")
    after = cache.stat_snapshot(tree, ["data/"])
    assert touched(before, after) == ["data/a.csv", "data/new.txt"]
    digests = cache.hash_paths(tree, [*touched(before, after), "data/gone"])
    assert digests == {"data/a.csv": sha(b"a,b\n1,2\n"), "data/new.txt": sha(b"new")}
    with pytest.raises(ValueError):
        cache.stat_snapshot(tree, ["../elsewhere"])
    cache.close()


def test_hash_paths_never_hashes_a_file_reached_through_a_swapped_folder(
    tmp_path: Path, tree: Path
) -> None:
    """F13: a folder listed by the snapshot, swapped for a link to outside before hashing."""
    cache = HashCache(tmp_path / "h.db", clock_ns=lambda: LATER)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.bin").write_bytes(b"a secret outside the project")
    listed = cache.stat_snapshot(tree, ["data/"])
    assert "data/sub/b.bin" in listed
    (tree / "data" / "sub" / "b.bin").unlink()
    (tree / "data" / "sub").rmdir()
    (tree / "data" / "sub").symlink_to(outside)
    digests = cache.hash_paths(tree, sorted(listed))
    assert "data/sub/b.bin" not in digests
    assert sha(b"a secret outside the project") not in digests.values()
    assert digests["data/a.csv"] == sha(b"a,b\n1,2\n")
    assert any(s.startswith("data/sub/b.bin (not reached inside") for s in cache.skipped)
    (tree / "data" / "link").symlink_to("a.csv")
    assert cache.hash_paths(tree, ["data/link"]) == {"data/link": "symlink:a.csv"}
    cache.close()


def test_a_folder_swapped_for_a_link_while_a_tree_is_hashed_is_not_entered(
    tmp_path: Path, tree: Path
) -> None:
    """F13, the data side: `snapshot` runs beside the command, which can swap a folder for a
    link to outside between the listing of its parent and the walk into it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"a secret outside the project")
    (tree / "data" / "zz.txt").write_bytes(b"listed after sub/")
    reads: list[int] = []
    swapped: list[bool] = []

    def clock() -> int:  # called once per file read; data/sub is a folder when listed
        reads.append(1)
        if len(reads) == 3:  # data/a.csv, data/empty, data/zz.txt: sub/ is walked next
            sub = tree / "data" / "sub"
            (sub / "b.bin").unlink()
            sub.rmdir()
            sub.symlink_to(outside)
            swapped.append(True)
        return LATER

    cache = HashCache(tmp_path / "h.db", clock_ns=clock)
    digests = cache.snapshot(tree, ["data/"])
    assert swapped
    assert "data/sub/secret" not in digests
    assert sha(b"a secret outside the project") not in digests.values()
    assert digests["data/a.csv"] == sha(b"a,b\n1,2\n")
    assert any("data/sub/ (not walked" in s for s in cache.skipped), cache.skipped
    cache.close()


def test_skipped_notes_are_bounded(tree: Path, tmp_path: Path) -> None:
    from envd.gateways import hashcache

    with HashCache(tmp_path / "hashes.sqlite", max_files=0) as cache:
        for _ in range(hashcache.MAX_SKIPPED):  # a long-lived daemon hashing an over-full tree
            cache.hash_tree(tree)
        assert len(cache.skipped) == hashcache.MAX_SKIPPED
        assert all("over 0 files" in note for note in cache.skipped)
