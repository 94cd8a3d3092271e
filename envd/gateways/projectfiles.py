"""Reading a project's own files (envd.yaml, the requirements it names, envd.lock).

The one place envd reads files a user controls, so the checks every such read needs live
here; the parsing itself is pure (envd.model).

Every read is bounded, before any byte is decoded:

- the path must name a regular file (after following symlinks). It is opened with
  O_NONBLOCK and checked with fstat on the open descriptor, so a FIFO never blocks the
  daemon, and a directory, a socket or a device such as /dev/zero is refused;
- at most a size limit is read (``SPEC_MAX_BYTES``, ``REQUIREMENTS_MAX_BYTES``,
  ``LOCK_MAX_BYTES``): the file's size is checked, and then at most limit + 1 bytes are
  read, so a file that grows, or lies about its size (procfs), cannot exhaust memory;
- the bytes must be UTF-8; the error names the absolute file and the line of the first
  bad byte;
- every file must lie inside the project directory, also after resolving symlinks (a link
  inside the project may point to another file inside it), envd.yaml included (the spec parser
  already refuses absolute paths and `..`). The resolved path is then opened one component
  at a time without following links (`files.open_beneath`), so a link planted meanwhile (by
  a container, which can write the project) fails the read instead of leading outside.

Spec and requirements problems are SpecError (exit 1), lock problems LockError.

Parsing costs milliseconds (YAML, the lock's integrity check) and `enter` reads both on every
call, so the last parse of each envd.yaml and envd.lock is kept: a read whose bytes (and, for
envd.yaml, the outcome of every read of the files it names) equal the last one's gets that
parse again. Files are still read every time, so every check above still applies to each
call, and an edit is seen however fast it follows (no timestamps are trusted).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from envd.errors import LockError, NotFound, SpecError, UsageError
from envd.gateways.files import open_beneath
from envd.model.lockfile import LockEdited, LockFile, loads
from envd.model.spec import SPEC_FILENAME, FileRefused, Spec
from envd.model.spec_parser import parse_spec
from envd.model.spec_requirements import requirements_format

MIB = 1024 * 1024
SPEC_MAX_BYTES = 256 * 1024  # envd.yaml: real ones are a few KiB; pure-Python YAML parses ~9 s/MiB
REQUIREMENTS_MAX_BYTES = 1 * MIB  # each requirements file (~20,000 lines)
LOCK_FORMAT_MAX_BYTES = 8 * MIB  # a uv.lock, Pipfile.lock or pylock.toml named in `requirements:`
LOCK_MAX_BYTES = 32 * MIB  # envd.lock (every artifact hash of a large environment)

_CHUNK = 64 * 1024
# What parsing an envd.yaml read besides it: ("text", relpath, outcome) or ("file", relpath, bool)
_Read = tuple[str, str, object]
_CACHE_MAX = 256  # projects whose last parse is kept (each a few KiB to a few MiB)
_cache_lock = threading.Lock()
# (root, limits) -> (envd.yaml text, what its parse read, the Spec)
_spec_cache: dict[tuple[str, int, int], tuple[str, tuple[_Read, ...], Spec]] = {}
# absolute path -> (envd.lock text, the LockFile)
_lock_cache: dict[str, tuple[str, LockFile]] = {}


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


def load_spec(
    project_dir: str | Path,
    *,
    spec_limit: int = SPEC_MAX_BYTES,
    requirements_limit: int = REQUIREMENTS_MAX_BYTES,
) -> Spec:
    """Read and validate <project_dir>/envd.yaml and the requirements file(s) it names."""
    root = Path(project_dir).resolve()
    path = root / SPEC_FILENAME
    try:
        text = decode_utf8(read_beneath(root, SPEC_FILENAME, spec_limit)[0])
    except FileNotFoundError:
        what = "envd.yaml is a dangling symlink" if path.is_symlink() else "no envd.yaml here"
        raise SpecError(
            what,
            file=str(path),
            hint=f"create one with `envctl init {root}` (templates: `envctl init --list`)",
        ) from None
    except PermissionError:
        raise SpecError(
            "cannot be read: permission denied", file=str(path), hint="check its permissions"
        ) from None
    except _NotReadable as exc:
        message = exc.message
        if exc.line is not None:
            hint = "save envd.yaml as UTF-8 (it is YAML text)"
        elif exc.outside is not None:
            message = f"points to {exc.outside}, outside the project"
            hint = (
                "copy the file into the project in place of the link "
                "(envd reads only files inside the project)"
            )
        else:
            hint = f"envd.yaml must be a regular text file of at most {_size(spec_limit)}"
        raise SpecError(message, file=str(path), line=exc.line, hint=hint) from None

    key = (str(root), spec_limit, requirements_limit)
    cached = _spec_cache.get(key)
    if (
        cached is not None
        and cached[0] == text
        and _same_reads(root, requirements_limit, cached[1])
    ):
        return cached[2]
    reads: list[_Read] = []
    spec = parse_spec_text(
        text, root, source=str(path), requirements_limit=requirements_limit, reads=reads
    )
    _remember(_spec_cache, key, (text, tuple(reads), spec))
    return spec


def parse_spec_text(
    text: str,
    project_dir: str | Path,
    *,
    source: str | None = None,
    requirements_limit: int = REQUIREMENTS_MAX_BYTES,
    reads: list[_Read] | None = None,
) -> Spec:
    """Validate envd.yaml text for `project_dir` (not yet written, e.g. by `envctl init`),
    reading the files it names as load_spec does (each read's outcome appended to `reads`)."""
    root = Path(project_dir).resolve()
    read_text, is_file = _spec_readers(root, requirements_limit)
    if reads is not None:
        read_text, is_file = _recorded(read_text, is_file, reads)
    return parse_spec(
        text,
        source=source or str(root / SPEC_FILENAME),
        project_dir=str(root),
        read_text=read_text,
        is_file=is_file,
    )


def _spec_readers(
    root: Path, requirements_limit: int
) -> tuple[Callable[[str], str], Callable[[str], bool]]:
    def read_text(relpath: str) -> str:
        kind = requirements_format(relpath)
        limit = requirements_limit
        if kind in ("uv.lock", "Pipfile.lock", "pylock"):  # every artifact of every package
            limit = max(requirements_limit, LOCK_FORMAT_MAX_BYTES)
        return _read_requirements(root, relpath, limit)

    def is_file(relpath: str) -> bool:
        """A regular file inside the project (after symlinks); never opened, so never blocks."""
        try:
            target = (root / relpath).resolve()
            return target.is_relative_to(root) and target.is_file()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
            return False

    return read_text, is_file


def _read_outcome(read_text: Callable[[str], str], relpath: str) -> object:
    """A requirements read as a comparable value: its text, or the error it raised."""
    try:
        return ("ok", read_text(relpath))
    except Exception as exc:  # compared, then raised again where the parser reads it
        return ("error", type(exc).__name__, str(exc))


def _recorded(
    read_text: Callable[[str], str], is_file: Callable[[str], bool], reads: list[_Read]
) -> tuple[Callable[[str], str], Callable[[str], bool]]:
    def recorded_read(relpath: str) -> str:
        try:
            text = read_text(relpath)
        except Exception as exc:
            reads.append(("text", relpath, ("error", type(exc).__name__, str(exc))))
            raise
        reads.append(("text", relpath, ("ok", text)))
        return text

    def recorded_is_file(relpath: str) -> bool:
        answer = is_file(relpath)
        reads.append(("file", relpath, answer))
        return answer

    return recorded_read, recorded_is_file


def _same_reads(root: Path, requirements_limit: int, reads: tuple[_Read, ...]) -> bool:
    """Whether every file a cached parse read reads the same now."""
    read_text, is_file = _spec_readers(root, requirements_limit)
    for kind, relpath, outcome in reads:
        now = is_file(relpath) if kind == "file" else _read_outcome(read_text, relpath)
        if now != outcome:
            return False
    return True


def _remember(cache: dict[Any, Any], key: object, value: object) -> None:
    with _cache_lock:
        cache.pop(key, None)
        if len(cache) >= _CACHE_MAX:
            del cache[next(iter(cache))]  # the oldest entry
        cache[key] = value


def forget_parses() -> None:
    """Drop every kept parse (tests; a daemon never needs to)."""
    with _cache_lock:
        _spec_cache.clear()
        _lock_cache.clear()


def read_project_file(
    project_dir: str | Path, relpath: str, *, limit: int = REQUIREMENTS_MAX_BYTES
) -> str | None:
    """The text of a file inside the project (bounded, regular, UTF-8), or None when absent.

    A file that exists but cannot be read, or that resolves outside the project, is a
    SpecError naming it.
    """
    root = Path(project_dir).resolve()
    path = root / relpath
    if not os.path.lexists(path):
        return None
    try:
        return decode_utf8(read_beneath(root, relpath, limit)[0])
    except FileNotFoundError:
        return None
    except PermissionError:
        raise SpecError(
            "cannot be read: permission denied", file=str(path), hint="check its permissions"
        ) from None
    except _NotReadable as exc:
        if exc.line is not None:
            hint = "save it as UTF-8 text"
        elif exc.outside is not None:
            hint = "copy the file into the project directory (envd only reads files inside it)"
        else:
            hint = f"it must be a regular text file of at most {_size(limit)}"
        raise SpecError(exc.message, file=str(path), line=exc.line, hint=hint) from None


def _read_requirements(root: Path, relpath: str, limit: int) -> str:
    """A requirements file named by envd.yaml (relpath already checked to stay inside)."""
    path = root / relpath
    try:
        return decode_utf8(read_beneath(root, relpath, limit)[0])
    except PermissionError:
        raise FileRefused(
            f"requirements file `{relpath}` cannot be read: permission denied",
            hint="check its permissions",
        ) from None
    except _NotReadable as exc:
        if exc.line is not None:
            raise SpecError(
                exc.message,
                file=str(path),
                line=exc.line,
                hint="save the requirements file as UTF-8 text",
            ) from None
        if exc.outside is not None:
            hint = "copy the file into the project directory (envd only reads files inside it)"
        else:
            hint = f"name a regular text file of at most {_size(limit)}"
        raise FileRefused(f"requirements file `{relpath}` {exc.message}", hint=hint) from None


def _relock_fix(path: Path) -> str:
    return f"delete {path} and run `envctl lock {path.parent}` to write it again"


def read_lock_text(path: Path, *, limit: int = LOCK_MAX_BYTES) -> str | None:
    """The checked text of the lock at `path` (regular, bounded, UTF-8, inside its project
    folder after links), or None when absent."""
    if not path.exists():
        return None
    path = path.absolute()
    fix = _relock_fix(path)
    try:
        return decode_utf8(read_beneath(path.parent.resolve(), path.name, limit)[0])
    except FileNotFoundError:
        return None
    except PermissionError:
        raise LockError(f"{path}: cannot be read: permission denied", hint=fix) from None
    except _NotReadable as exc:
        where = f"{path}:{exc.line}" if exc.line is not None else str(path)
        hint = fix if exc.line is not None else f"it must be a regular file in the project; {fix}"
        raise LockError(f"{where}: {exc.message}", hint=hint) from None


def parse_lock(text: str, path: Path) -> LockFile:
    """loads(), with a fix that works: `envctl lock` itself refuses a corrupt lock."""
    path = path.absolute()
    try:
        return loads(text, str(path))
    except LockEdited as exc:  # `envctl lock` re-resolves an edited lock: its hint works
        exc.hint = (
            f"run `envctl lock {path.parent}` to re-resolve (the edited pins are resolved again)"
        )
        raise
    except LockError as exc:
        fix = _relock_fix(path)
        hint = f"upgrade envd, or {fix}" if (exc.hint or "").startswith("upgrade") else fix
        raise LockError(exc.message, hint=hint) from exc


def read_lock(path: Path, *, limit: int = LOCK_MAX_BYTES) -> LockFile | None:
    """The lock at `path`, or None when there is none."""
    text = read_lock_text(path, limit=limit)
    if text is None:
        return None
    key = str(path.absolute())
    cached = _lock_cache.get(key)
    if cached is not None and cached[0] == text:
        return cached[1]
    lock = parse_lock(text, path)
    _remember(_lock_cache, key, (text, lock))
    return lock


SETUP_FILE_MAX_BYTES = 16 * MIB  # each file a `setup:` step names
SETUP_FILES_MAX_BYTES = 64 * MIB  # all of them together, for one build
SETUP_FILES_MAX_COUNT = 10_000  # files under the folders a `setup:` step names


def read_setup_files(
    project_dir: str | Path,
    entries: list[str],
    *,
    limit: int = SETUP_FILE_MAX_BYTES,
    total_limit: int = SETUP_FILES_MAX_BYTES,
    count_limit: int = SETUP_FILES_MAX_COUNT,
    what: str = "`setup:`",
) -> dict[str, list[tuple[str, bytes, bool]]]:
    """The files each entry of a `setup:` step's `files:` names, as (relative path, bytes,
    executable): a file, or `dir/` for every regular file under that folder (sorted).

    Bytes, not text: a setup step may need any file. Each read is bounded (regular files
    only, inside the project after symlinks); anything else is a SpecError naming it.
    """
    root = Path(project_dir).resolve()
    out: dict[str, list[tuple[str, bytes, bool]]] = {}
    total = 0
    count = 0
    for entry in entries:
        relpaths = _setup_entry_paths(root, entry, count_limit - count, what)
        files: list[tuple[str, bytes, bool]] = []
        for relpath in relpaths:
            path = root / relpath
            where = f"{what} names {relpath}, which"
            try:
                data, mode = read_beneath(root, relpath, min(limit, total_limit - total))
                executable = bool(mode & 0o111)
            except FileNotFoundError:
                raise SpecError(
                    f"{where} does not exist",
                    file=str(path),
                    hint="create it, or remove it from `files:` in envd.yaml",
                ) from None
            except PermissionError:
                raise SpecError(
                    f"{where} cannot be read: permission denied",
                    file=str(path),
                    hint="check its permissions",
                ) from None
            except (OSError, RuntimeError):
                raise SpecError(f"{where} cannot be read", file=str(path)) from None
            except _NotReadable as exc:
                hint = (
                    "copy the file into the project directory"
                    if exc.outside is not None
                    else f"name regular files of at most {_size(limit)} each, "
                    f"{_size(total_limit)} in all"
                )
                raise SpecError(f"{where} {exc.message}", file=str(path), hint=hint) from None
            total += len(data)
            files.append((relpath, data, executable))
        count += len(relpaths)
        out[entry] = files
    return out


def _setup_entry_paths(root: Path, entry: str, budget: int, what: str) -> list[str]:
    """`entry` itself, or for `dir/` every regular file under it (relative, sorted)."""
    if not entry.endswith("/"):
        return [entry]
    folder = root / entry
    try:
        if not folder.resolve().is_relative_to(root) or not folder.is_dir():
            raise SpecError(
                f"{what} names the folder {entry}, which is not a folder in the project",
                file=str(folder),
                hint="create it, or remove it from `files:` in envd.yaml",
            )
    except (OSError, RuntimeError):
        raise SpecError(
            f"{what} names the folder {entry}, which cannot be read", file=str(folder)
        ) from None
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # symlinked folders are not followed
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue  # (a symlink inside the folder may point anywhere: not copied)
            found.append(path.relative_to(root).as_posix())
            if len(found) > budget:
                raise SpecError(
                    f"{what} names the folder {entry}, which holds more than "
                    f"{SETUP_FILES_MAX_COUNT} files",
                    file=str(folder),
                    hint="name the files the step needs",
                )
    return sorted(found)


def find_project_package(project_dir: str | Path, name: str) -> tuple[str, str | None]:
    """Where the import package `name` lies: ("src" or "", "src/name/", "name.py", ...
    relative to the project, or None when neither src/ nor the top holds it)."""
    root = Path(project_dir).resolve()

    def inside(relpath: str, folder: bool) -> bool:
        try:
            target = (root / relpath).resolve()
            found = target.is_dir() if folder else target.is_file()
            return target.is_relative_to(root) and found
        except (OSError, RuntimeError):
            return False

    for source in ("src", ""):
        prefix = f"{source}/" if source else ""
        if inside(f"{prefix}{name}", folder=True):
            return source, f"{prefix}{name}/"
        if inside(f"{prefix}{name}.py", folder=False):
            return source, f"{prefix}{name}.py"
    return ("src" if inside("src", folder=True) else ""), None


def is_executable_file(project_dir: str | Path, relpath: str) -> bool:
    """Whether `relpath` is a regular file inside the project with an execute bit (links
    followed, never opened)."""
    root = Path(project_dir).resolve()
    try:
        target = (root / relpath).resolve()
        st = target.stat()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return False
    return target.is_relative_to(root) and stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)
