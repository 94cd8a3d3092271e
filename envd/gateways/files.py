"""Local files: atomic writes (with fsync), sha256 of a file, advisory file locks, and
opening a checked relative path beneath a root without following links."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Protocol


def write_atomic(path: str | os.PathLike[str], text: str, mode: int = 0o666) -> None:
    """Replace `path` with `text` so that readers see the old file or the new one, never half.

    An existing file keeps its mode; a new one gets `mode` (less the umask)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # umask applies
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def folder_identity(path: str | os.PathLike[str]) -> str:
    """ "DEVICE:INODE" of a folder, which a new folder under the same path (deleted and cloned
    again, or one moved there) does not share; "" when there is none to stat."""
    try:
        st = os.stat(path)
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256 as lowercase hex (envd's one file hash: `hashlib.file_digest`)."""
    with open(path, "rb") as f:
        return sha256_fileobj(f)


def sha256_fileobj(file: io.BufferedIOBase) -> str:
    """The sha256, as lowercase hex, of what is left to read in a binary file opened by the
    caller (beneath a root, without following links...)."""
    return hashlib.file_digest(file, "sha256").hexdigest()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (made if missing), across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_beneath(
    root: str | os.PathLike[str],
    rel: PurePosixPath,
    flags: int = os.O_RDONLY,
    mode: int = 0o600,
    *,
    make_dirs: bool = False,
) -> int:
    """A descriptor for `root/rel`, opened one component at a time with O_NOFOLLOW (an
    `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` by hand): a symlink anywhere on the way,
    the last component included, fails with ELOOP or ENOTDIR instead of being followed, so a
    path checked by `envd.model.safenames.relative` cannot be bent outside `root` by a link
    planted after the check. `make_dirs` makes missing folders on the way (0700).
    The caller closes the descriptor."""
    fd = _parent_beneath(root, rel, make_dirs)
    try:
        return os.open(rel.parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    finally:
        os.close(fd)


def rename_beneath(
    source: str | os.PathLike[str],
    root: str | os.PathLike[str],
    rel: PurePosixPath,
    *,
    make_dirs: bool = False,
) -> bool:
    """Move the file `source` to `root/rel`, its folders reached as `open_beneath` reaches
    them (a link on the way fails; a link as the last component is replaced, not followed).
    False, with nothing moved, when the two are on different file systems."""
    fd = _parent_beneath(root, rel, make_dirs)
    try:
        os.rename(source, rel.parts[-1], dst_dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        raise
    finally:
        os.close(fd)
    return True


def _parent_beneath(root: str | os.PathLike[str], rel: PurePosixPath, make_dirs: bool) -> int:
    """A descriptor for the folder `rel` is in, each component opened with O_NOFOLLOW."""
    parts = rel.parts
    if not parts or rel.is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"open_beneath needs a checked relative path, not {rel!r}")
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, dir_flags)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, dir_flags, dir_fd=fd)
            except FileNotFoundError:
                if not make_dirs:
                    raise
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(part, dir_flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class HashingReader:
    """Passes reads of `stream` through and hashes them (sha256); `drain` reads what the
    consumer left and gives the hex digest of all of it."""

    def __init__(self, stream: _Readable) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()
