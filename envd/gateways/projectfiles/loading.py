"""envd.yaml (with the requirements files it names) and envd.lock: read through the confined
reads, parsed, and the last parse of each kept.

Parsing costs milliseconds (YAML, the lock's integrity check) and `enter` reads both on every
call, so the last parse of each envd.yaml and envd.lock is kept: a read whose bytes (and, for
envd.yaml, the outcome of every read of the files it names) equal the last one's gets that
parse again. Files are still read every time, so every check (see the package) applies to each
call, and an edit is seen however fast it follows (no timestamps are trusted).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from envd.errors import LockError, SpecError
from envd.gateways.projectfiles.confined import (
    MIB,
    _NotReadable,
    _size,
    decode_utf8,
    read_beneath,
)
from envd.model.lockfile import LockEdited, LockFile, loads
from envd.model.spec import SPEC_FILENAME, FileRefused, Spec
from envd.model.spec_parser import parse_spec
from envd.model.spec_requirements import requirements_format

SPEC_MAX_BYTES = 256 * 1024  # envd.yaml: real ones are a few KiB; pure-Python YAML parses ~9 s/MiB
REQUIREMENTS_MAX_BYTES = 1 * MIB  # each requirements file (~20,000 lines)
LOCK_FORMAT_MAX_BYTES = 8 * MIB  # a uv.lock, Pipfile.lock or pylock.toml named in `requirements:`
LOCK_MAX_BYTES = 32 * MIB  # envd.lock (every artifact hash of a large environment)

# What parsing an envd.yaml read besides it: ("text", relpath, outcome) or ("file", relpath, bool)
_Read = tuple[str, str, object]
_CACHE_MAX = 256  # projects whose last parse is kept (each a few KiB to a few MiB)
_cache_lock = threading.Lock()
# (root, limits) -> (envd.yaml text, what its parse read, the Spec)
_spec_cache: dict[tuple[str, int, int], tuple[str, tuple[_Read, ...], Spec]] = {}
# absolute path -> (envd.lock text, the LockFile)
_lock_cache: dict[str, tuple[str, LockFile]] = {}


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
