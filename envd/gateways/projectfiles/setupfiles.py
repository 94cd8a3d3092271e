"""The files a `setup:` step names, and the project's own package and executables, read
through the confined reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from envd.errors import SpecError
from envd.gateways.projectfiles.confined import (
    MIB,
    _NotReadable,
    _size,
    read_beneath,
)

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
