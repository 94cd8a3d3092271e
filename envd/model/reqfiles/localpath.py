"""A local path a requirements format names (`-e ./sub`, Pipfile `{path = ...}`, a uv
workspace member): the project itself, a folder inside it, or outside it (refused: envd
builds only from the project's own files). Checked with envd.model.safenames."""

from __future__ import annotations

import posixpath
from typing import Literal

from envd.model.safenames import UnsafeName, relative

Where = Literal["project", "inside", "outside"]


def locate(written_in: str, target: str) -> tuple[Where, str]:
    """Where `target` (as written in the file at `written_in`, relative to the project)
    points, and the path relative to the project ("" for the project itself)."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(written_in), target))
    if joined == ".":
        return "project", ""
    try:
        return "inside", relative(joined, "local path").as_posix()
    except UnsafeName:
        return "outside", target


def outside_message(what: str, target: str) -> tuple[str, str]:
    """The refusal of a local path outside the project: (message, hint)."""
    return (
        f"{what} `{target}` is outside the project: envd builds only from the project's own "
        "files (a clone elsewhere would not have it)",
        "publish it to an index and depend on it by name and version, or move it into the project",
    )


def inside_message(what: str, target: str) -> tuple[str, str]:
    """Why a local package in a subfolder is not installed: (message, hint)."""
    return (
        f"{what} `{target}` is a package in a subfolder; envd.yaml's `project:` installs "
        "only the project at its top",
        f"run `envctl init {target}` to make it a project of its own, or depend on it by "
        "name from an index",
    )


def installed_editable_note(where: str, name: str, target: str) -> str:
    """A local folder not marked editable, installed editable all the same (a note)."""
    return (
        f"{where}: `{name}` (local folder `{target}`, not editable there) is installed "
        "editable from the project's files: envd installs every local package as a link to "
        "its folder under /workspace"
    )
