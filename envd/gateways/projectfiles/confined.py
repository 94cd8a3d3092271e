"""Bounded, confined reads of a project's files: a regular file, at most a limit, UTF-8,
inside the project also after resolving symlinks, opened beneath the root without following
links (see the package docstring for each check)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from envd.errors import NotFound, UsageError
from envd.gateways.files import open_beneath

MIB = 1024 * 1024
_CHUNK = 64 * 1024


class _NotReadable(Exception):
    """A project file that is not a bounded, regular, UTF-8 file; `line` for decoding errors."""

    def __init__(
        self, message: str, line: int | None = None, *, outside: Path | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.outside = outside  # where it resolves, outside the project: the fix is to copy it in


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _size(n: int) -> str:
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def read_bounded(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of the regular file at `path`, or _NotReadable.

    FileNotFoundError (also for a dangling symlink) and PermissionError pass through.
    A project's files are read with read_beneath, which also keeps them inside the project.
    """
    _stat_regular(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP, errno.EISDIR):
            raise _NotReadable("is not a regular file") from None
        raise
    try:
        return _read_open(fd, limit)
    finally:
        os.close(fd)


def read_user_file(path: str | Path, limit: int, what: str) -> bytes:
    """A file the user named on the command line (`envctl diff A FILE`), read like any
    untrusted file: a regular file, opened without blocking, at most `limit` bytes. Missing is
    NotFound (exit 4); a FIFO, a device, a folder or a file over the limit is a UsageError."""
    try:
        return read_bounded(Path(path), limit)
    except FileNotFoundError:
        raise NotFound(f"no {what} at {path}") from None
    except PermissionError:
        raise UsageError(f"cannot read {path}: permission denied") from None
    except _NotReadable as exc:
        raise UsageError(f"{path} {exc.message}; refused", hint=f"name the {what} file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _stat_regular(path: Path) -> None:
    """Refuse a path that is not a regular file (after links), without opening it."""
    try:
        st = os.stat(path)  # never blocks, not even on a FIFO or a socket
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "no such file", str(path)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotReadable("is a symlink loop") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise _NotReadable(f"is {_kind(st.st_mode)}, not a regular file")


def read_beneath(root: Path, relpath: str, limit: int) -> tuple[bytes, int]:
    """At most `limit` bytes of the regular file `root/relpath`, and its mode, or _NotReadable.

    `root` is resolved. Links inside `root` are followed, but where the file resolves to must
    lie inside `root`; that resolved path is then opened without following any link, so a
    link swapped in after the check fails the read. FileNotFoundError and PermissionError
    pass through.
    """
    path = root / relpath
    _stat_regular(path)
    try:
        resolved = path.resolve(strict=True)
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise _NotReadable("is a symlink loop") from None
    if resolved == root or not resolved.is_relative_to(root):
        raise _NotReadable(f"resolves to {resolved}, outside the project", outside=resolved)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY  # open_beneath adds O_NOFOLLOW, O_CLOEXEC
    try:
        fd = open_beneath(root, PurePosixPath(resolved.relative_to(root).as_posix()), flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _NotReadable(
                "changed while envd read it (a symlink appeared on its path)"
            ) from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):
            raise _NotReadable("is not a regular file") from None
        raise
    try:
        return _read_open(fd, limit), os.fstat(fd).st_mode
    finally:
        os.close(fd)


def read_run_file(root: str | Path, relpath: str, limit: int) -> bytes | None:
    """`read_beneath` for files a run reads beside its command (params, metrics, envd.lock):
    the bytes, or None when the file is missing, not a regular file inside the project (a
    container may have made it a FIFO or a link out) or over `limit`."""
    try:
        return read_beneath(Path(root).resolve(), relpath, limit)[0]
    except (_NotReadable, OSError, RuntimeError):
        return None


def _read_open(fd: int, limit: int) -> bytes:
    """At most `limit` bytes of the open descriptor `fd`, which must be a regular file."""
    st = os.fstat(fd)  # what was opened, not what the name pointed at a moment ago
    if not stat.S_ISREG(st.st_mode):
        raise _NotReadable(f"is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise _NotReadable(f"is {st.st_size} bytes, larger than the limit of {_size(limit)}")
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise _NotReadable(f"is larger than the limit of {_size(limit)}")
    return b"".join(chunks)


def decode_utf8(data: bytes) -> str:
    """`data` as text, or _NotReadable naming the line of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _NotReadable(
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})", line=line
        ) from None


def read_text_bounded(path: Path, limit: int) -> str:
    """The UTF-8 text of the regular file at `path`, at most `limit` bytes (or _NotReadable)."""
    return decode_utf8(read_bounded(path, limit))
