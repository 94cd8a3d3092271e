"""Content hashes of files and trees, cached by stat data like git's index.

`HashCache(db_path)` returns sha256 per file, and {relpath: digest} for a tree. A file whose
(st_dev, st_ino, st_size, st_mtime_ns) is unchanged since it was hashed is not read again, so
re-hashing an unchanged data set costs one lstat per file and one indexed lookup.

Safety, as git does it:
- a file is stat-ed through the open descriptor before and after it is read; if the two differ
  (it changed while being read) it is read again, up to `retries` times, and never cached;
- an entry whose mtime is within `racy_ns` (1 s) of the time it was hashed is not cached: a
  write in the same clock tick could change the bytes without changing the stat data;
- symlinks are recorded as links (`symlink:<target>`), never followed, so a tree is never left
  through one; FIFOs, sockets and devices are skipped (listed in `skipped`), and so is anything
  past `max_files` (the last MAX_SKIPPED of these notes are kept).
The SQLite file is created with mode 0600.

`snapshot(root, paths)` hashes project-relative files and folders before and after a run;
`changed(before, after)` is what the run created or changed (its outputs).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from envd.gateways.files import open_beneath, sha256_fileobj

SYMLINK_PREFIX = "symlink:"
RACY_NS = 1_000_000_000
MAX_FILES = 1_000_000
MAX_SKIPPED = 1000  # notes kept in `skipped`: the daemon's one cache lives as long as it does

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hashes (
    path BLOB PRIMARY KEY,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
) WITHOUT ROWID;
"""

StatKey = tuple[int, int, int, int]
_At = tuple[int, str]  # a folder's descriptor and a name in it
_Item = tuple[str, os.stat_result, _At | None]  # a path, its lstat, where to open it
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileChangingError(OSError):
    """A file kept changing while it was read."""


class HashCache:
    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        racy_ns: int = RACY_NS,
        retries: int = 3,
        max_files: int = MAX_FILES,
    ) -> None:
        path = Path(db_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self.path = path
        self._clock_ns = clock_ns
        self._racy_ns = racy_ns
        self._retries = retries
        self._max_files = max_files
        self._lock = threading.RLock()  # one connection, shared by the daemon's threads
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._pending: list[tuple[bytes, int, int, int, int, str]] = []
        self._preloaded: dict[bytes, tuple[int, int, int, int, str]] = {}
        self.reads = 0  # files read (cache misses), for tests and stats
        self.hits = 0
        # paths left out (special files, over max_files): the latest, bounded
        self.skipped: deque[str] = deque(maxlen=MAX_SKIPPED)

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ single files

    def _lookup(self, path: bytes, key: StatKey) -> str | None:
        if path in self._preloaded:
            row: tuple[int, int, int, int, str] | None = self._preloaded[path]
        else:
            row = self._db.execute(
                "SELECT dev, ino, size, mtime_ns, sha256 FROM hashes WHERE path = ?", (path,)
            ).fetchone()
        if row is not None and tuple(row[:4]) == key:
            return str(row[4])
        return None

    def _preload(self, folder: str) -> None:
        """Read the cached rows below `folder` in one range scan (path BLOBs sort bytewise)."""
        prefix = os.fsencode(folder.rstrip(os.sep) + os.sep)
        upper = prefix[:-1] + bytes([prefix[-1] + 1])
        self._preloaded = {
            bytes(row[0]): (row[1], row[2], row[3], row[4], row[5])
            for row in self._db.execute(
                "SELECT path, dev, ino, size, mtime_ns, sha256 FROM hashes"
                " WHERE path >= ? AND path < ?",
                (prefix, upper),
            )
        }

    def _read(self, path: str, at: _At | None = None) -> tuple[str, os.stat_result, bool]:
        """sha256 of the file, its stat, and whether it held still while read. With `at`
        (a folder's descriptor and a name in it) the file is opened and re-stat-ed there,
        not through `path`, which is then only the cache key."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | os.O_CLOEXEC
        for _ in range(max(self._retries, 1)):
            fd = os.open(at[1], flags, dir_fd=at[0]) if at else os.open(path, flags)
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise FileChangingError(f"{path}: no longer a regular file")
                with os.fdopen(fd, "rb", closefd=False) as file:
                    digest = sha256_fileobj(file)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            self.reads += 1
            try:
                now = os.lstat(at[1], dir_fd=at[0]) if at else os.lstat(path)
            except FileNotFoundError:
                now = None
            if _key(before) == _key(after) and now is not None and _key(now) == _key(after):
                return digest, after, True
        return digest, after, False

    def _hash_regular(self, path: str, st: os.stat_result, at: _At | None = None) -> str:
        encoded = os.fsencode(path)
        key = _key(st)
        cached = self._lookup(encoded, key)
        if cached is not None:
            self.hits += 1
            return cached
        digest, after, steady = self._read(path, at)
        if not steady:
            raise FileChangingError(f"{path}: changed while it was read {self._retries} times")
        racy = after.st_mtime_ns >= self._clock_ns() - self._racy_ns
        if not racy:
            self._pending.append((encoded, *_key(after), digest))
            if len(self._pending) >= 1000:
                self._flush()
        return digest

    def _flush(self) -> None:
        if not self._pending:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO hashes (path, dev, ino, size, mtime_ns, sha256)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                self._pending,
            )
        self._pending.clear()

    def hash_file(self, path: str | os.PathLike[str]) -> str:
        """sha256 of a regular file (`symlink:<target>` for a link, which is not followed)."""
        path = os.path.abspath(os.fspath(path))
        st = os.lstat(path)
        with self._lock:
            return self._hash_one(path, st)

    def _hash_one(self, path: str, st: os.stat_result) -> str:
        try:
            if stat.S_ISLNK(st.st_mode):
                return SYMLINK_PREFIX + os.readlink(path)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path}: not a regular file")
            return self._hash_regular(path, st)
        finally:
            self._flush()

    # ------------------------------------------------------------ trees

    def _walk(self, top: str) -> Iterator[_Item]:
        """(path, lstat, where) of every entry below `top` that is not a folder; links not
        followed. Each folder is opened from `top` one component at a time without following
        a link (`files.open_beneath`) and listed through its descriptor, and each entry is
        read through that descriptor (`where`): a folder swapped for a link to outside while
        the tree is walked (a process in the container) is never entered."""
        stack = [PurePosixPath()]
        while stack:
            rel = stack.pop()
            try:
                fd = open_beneath(top, rel, _DIR_FLAGS) if rel.parts else os.open(top, _DIR_FLAGS)
            except FileNotFoundError:
                continue  # removed since it was listed
            except OSError as exc:  # ELOOP, ENOTDIR: a link or a file where a folder was
                where = os.path.join(top, *rel.parts)
                self.skipped.append(f"{where}/ (not walked: {exc.strerror})")
                continue
            try:
                with os.scandir(fd) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
                folder = os.path.join(top, *rel.parts)
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(rel / entry.name)
                    else:
                        yield os.path.join(folder, entry.name), st, (fd, entry.name)
            finally:
                os.close(fd)

    def hash_tree(self, root: str | os.PathLike[str]) -> dict[str, str]:
        """{posix relpath: digest} for every file below `root` (or {name: digest} for a file)."""
        root = os.path.abspath(os.fspath(root))
        st = os.lstat(root)
        with self._lock:
            if not stat.S_ISDIR(st.st_mode):
                return self._entries([(root, st, None)], os.path.dirname(root))
            self._preload(root)
            return self._entries(self._walk(root), root)

    def _entries(self, items: Iterable[_Item], base: str) -> dict[str, str]:
        out: dict[str, str] = {}
        prefix = base.rstrip(os.sep) + os.sep
        try:
            for path, st, at in items:
                if path.startswith(prefix):
                    rel = path[len(prefix) :].replace(os.sep, "/")
                else:
                    rel = os.path.relpath(path, base).replace(os.sep, "/")
                if len(out) >= self._max_files:
                    self.skipped.append(f"{rel} (over {self._max_files} files)")
                    continue
                if stat.S_ISLNK(st.st_mode):
                    link = os.readlink(at[1], dir_fd=at[0]) if at else os.readlink(path)
                    out[rel] = SYMLINK_PREFIX + link
                elif stat.S_ISREG(st.st_mode):
                    try:
                        out[rel] = self._hash_regular(path, st, at)
                    except FileNotFoundError:
                        continue  # removed since it was listed
                    except FileChangingError:
                        self.skipped.append(f"{rel} (kept changing while it was read)")
                    except PermissionError:
                        self.skipped.append(f"{rel} (not readable)")
                else:
                    self.skipped.append(f"{rel} (not a regular file)")
        finally:
            self._preloaded = {}
            self._flush()
        return dict(sorted(out.items()))

    def snapshot(self, root: str | os.PathLike[str], paths: Iterable[str]) -> dict[str, str]:
        """{project-relative path: digest} of the files and folders `paths` under `root`.

        Paths that do not exist (yet) are simply absent. A path that leaves `root` (`..`, an
        absolute path, or through a symlinked parent folder) is refused.
        """
        root_path = os.path.realpath(os.fspath(root))
        out: dict[str, str] = {}
        for target, st in _targets(root_path, paths):
            with self._lock:
                if stat.S_ISDIR(st.st_mode):
                    self._preload(target)
                    items: Iterable[_Item] = self._walk(target)
                else:
                    items = [(target, st, None)]
                out.update(self._entries(items, root_path))
        return dict(sorted(out.items()))

    def stat_snapshot(
        self, root: str | os.PathLike[str], paths: Iterable[str]
    ) -> dict[str, StatKey]:
        """{project-relative path: (dev, ino, size, mtime_ns)} below `paths`, reading no file:
        what a run's start needs to tell, afterwards, which outputs it touched."""
        root_path = os.path.realpath(os.fspath(root))
        out: dict[str, StatKey] = {}
        prefix = root_path.rstrip(os.sep) + os.sep
        for target, st in _targets(root_path, paths):
            items = self._walk(target) if stat.S_ISDIR(st.st_mode) else iter([(target, st, None)])
            for path, entry, _ in items:
                out[path[len(prefix) :].replace(os.sep, "/")] = _key(entry)
        return out

    def hash_paths(self, root: str | os.PathLike[str], rels: Iterable[str]) -> dict[str, str]:
        """{relpath: digest} of the given project-relative files (missing ones left out).

        Each file is reached from `root` one folder at a time without following a link
        (`files.open_beneath`): a folder swapped for a symlink after the paths were listed
        (a process left in the container) leaves the path out, in `skipped`, and never
        gets a file outside `root` hashed."""
        root_path = os.path.realpath(os.fspath(root))
        out: dict[str, str] = {}
        with self._lock:
            try:
                for rel in sorted(rels):
                    if len(out) >= self._max_files:
                        self.skipped.append(f"{rel} (over {self._max_files} files)")
                        continue
                    try:
                        digest = self._hash_beneath(root_path, rel)
                    except FileNotFoundError:
                        continue  # removed since it was listed
                    except FileChangingError:
                        self.skipped.append(f"{rel} (kept changing while it was read)")
                        continue
                    except (OSError, ValueError) as exc:  # ELOOP/ENOTDIR: a link on the way
                        why = exc.strerror if isinstance(exc, OSError) else str(exc)
                        self.skipped.append(f"{rel} (not reached inside the project: {why})")
                        continue
                    if digest is not None:
                        out[rel] = digest
            finally:
                self._flush()
        return dict(sorted(out.items()))

    def _hash_beneath(self, root_path: str, rel: str) -> str | None:
        """The digest of `root_path/rel`, its folders opened without following links;
        None for something that is neither a file nor a link (recorded in `skipped`)."""
        parts = PurePosixPath(rel)
        folder = parts.parent
        if folder == PurePosixPath("."):
            dir_fd = os.open(root_path, _DIR_FLAGS)
        else:
            dir_fd = open_beneath(root_path, folder, _DIR_FLAGS)
        try:
            name = parts.name
            if name in ("", ".", ".."):
                raise ValueError(f"{rel!r} is not a file's path")
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISLNK(st.st_mode):
                return SYMLINK_PREFIX + os.readlink(name, dir_fd=dir_fd)
            if not stat.S_ISREG(st.st_mode):
                self.skipped.append(f"{rel} (not a regular file)")
                return None
            path = os.path.join(root_path, *folder.parts, name)
            return self._hash_regular(path, st, (dir_fd, name))
        finally:
            os.close(dir_fd)


def _targets(root_path: str, paths: Iterable[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(absolute path, lstat) of each existing project-relative path; refuses escapes."""
    for rel in paths:
        clean = os.path.normpath(rel.replace("/", os.sep))
        if os.path.isabs(clean) or clean == os.pardir or clean.startswith(os.pardir + os.sep):
            raise ValueError(f"{rel!r} is outside the project")
        target = os.path.join(root_path, clean) if clean != os.curdir else root_path
        parent = os.path.realpath(os.path.dirname(target))
        if os.path.commonpath([parent, root_path]) != root_path:
            raise ValueError(f"{rel!r} leads outside the project through a symlink")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            continue
        yield target, st


def touched(before: Mapping[str, StatKey], after: Mapping[str, StatKey]) -> list[str]:
    """Paths that are new in `after` or whose stat data changed: written (maybe with the same
    bytes) during the run."""
    return sorted(path for path, key in after.items() if before.get(path) != key)


def changed(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """The entries of `after` that are new or whose digest differs from `before`."""
    return {path: digest for path, digest in sorted(after.items()) if before.get(path) != digest}


def removed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Paths in `before` that are gone from `after`."""
    return sorted(set(before) - set(after))
