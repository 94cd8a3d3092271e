"""The other requirement formats `adopt` and `requirements:` read (pylock.toml, Pipfile,
Pipfile.lock, devcontainer.json, environment.yml, apt.txt, runtime.txt, .python-version,
postBuild, cog.yaml, constraints): the first byte picks the parser, the rest is the file."""

from __future__ import annotations

from collections.abc import Callable

from envd.model import reqfiles


def _read(text: str) -> reqfiles.Read:
    return lambda relpath: None if relpath.startswith("missing") else text


PARSERS: list[Callable[[str], object]] = [
    lambda t: reqfiles.parse_pylock(t, root="/p"),
    lambda t: reqfiles.parse_pipfile(t, root="/p", dev=True),
    lambda t: reqfiles.parse_pipfile_lock(t, root="/p", dev=True),
    lambda t: reqfiles.parse_devcontainer(t, root="/p"),
    lambda t: reqfiles.parse_environment_yml(t, root="/p", read=_read(t)),
    lambda t: reqfiles.parse_apt_txt(t, root="/p"),
    lambda t: reqfiles.parse_runtime_txt(t, root="/p"),
    lambda t: reqfiles.parse_python_version(t, root="/p"),
    lambda t: reqfiles.parse_postbuild(t, root="/p"),
    lambda t: reqfiles.parse_cog(t, _read(t), root="/p"),
    lambda t: reqfiles.parse_constraints("constraints.txt", _read(t), root="/p"),
]
# the seed corpus's file names, by parser
FILES = [
    "pylock.toml",
    "Pipfile",
    "Pipfile.lock",
    "devcontainer.json",
    "environment.yml",
    "apt.txt",
    "runtime.txt",
    ".python-version",
    "postBuild",
    "cog.yaml",
    "constraints.txt",
]


def target(data: bytes) -> None:
    if not data:
        return
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    PARSERS[data[0] % len(PARSERS)](text)
