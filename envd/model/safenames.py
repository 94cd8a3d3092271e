"""Names from untrusted input (envd.lock, archives, registry records, provenance statements,
MLflow replies, sync listings) become paths only through here.

A *component* is one file or folder name: never empty, `.`, `..`, never holding `/`, `\\`,
NUL or a control character, at most 255 bytes. A *relative path* is one or more components
joined by `/`: never absolute, never climbing. Both are checked lexically, here, before any
join; `envd.gateways.files.open_beneath` then opens such a path under its root one component
at a time without following links, so a link planted between the check and the open (a
process in a container racing the daemon) cannot lead outside either.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from envd.errors import VerificationError

MAX_COMPONENT_BYTES = 255  # NAME_MAX on Linux
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_DEPTH = 256


class UnsafeName(VerificationError):
    """A name from untrusted input that would leave the folder it is meant for."""


def _problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return f"`{name}` names a folder, not an entry in it"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it holds a control character"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid UTF-8"
    if size > MAX_COMPONENT_BYTES:
        return f"it is {size} bytes long (at most {MAX_COMPONENT_BYTES})"
    return None


def _shown(name: str) -> str:
    text = name if len(name) <= 80 else name[:77] + "..."
    return ascii(text)


def is_component(name: str) -> bool:
    """Whether `name` is one safe file name (see the module docstring)."""
    return _problem(name) is None


def component(name: str, what: str) -> str:
    """`name`, checked to be one safe file name; `what` says where it came from (for the
    error: "envd.lock: the file name of numpy's URL")."""
    problem = _problem(name)
    if problem is not None:
        raise UnsafeName(
            f"{what}: {_shown(name)} is not a plain file name ({problem}); refused",
            hint="a name from outside envd is used only as one entry inside envd's own "
            "folders; fix or remove the input that carries it",
        )
    return name


def relative(path: str, what: str) -> PurePosixPath:
    """`path` as a relative POSIX path of safe components (a leading `./` and repeated `/`
    are accepted, `..` and absolute paths are not)."""
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafeName(
            f"{what}: a path of {len(path)} characters is longer than {MAX_PATH_BYTES}; refused"
        )
    if path.startswith("/"):
        raise UnsafeName(
            f"{what}: {_shown(path)} is an absolute path; only a path relative to its "
            "folder is accepted"
        )
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        raise UnsafeName(f"{what}: {_shown(path)} names no file")
    if len(parts) > MAX_DEPTH:
        raise UnsafeName(f"{what}: {_shown(path)} is nested deeper than {MAX_DEPTH} folders")
    for part in parts:
        if part == "..":
            raise UnsafeName(f"{what}: {_shown(path)} climbs out of its folder (`..`); refused")
        component(part, what)
    return PurePosixPath(*parts)


def beneath(root: str | Path, path: str, what: str) -> Path:
    """`root` joined with `path` after `relative` checked it: lexically inside `root`.
    (Links on the way are the caller's to refuse: `files.open_beneath` does that.)"""
    return Path(root).joinpath(*relative(path, what).parts)


def child(root: str | Path, name: str, what: str) -> Path:
    """`root` joined with one checked component."""
    return Path(root) / component(name, what)
