"""Requirement files in every common format, read into one typed result (pure: no file I/O).

One module per format, each with a `parse` of the one signature `base.Parser`; `PARSERS` maps
the format names (`Parsed.format`) to them, as pre-commit's `all_languages.py` maps languages
to modules. The format-specific readers (`parse_pyproject(..., extras=, groups=)`, ...) are
re-exported here for callers that need their extra arguments.

Each parser gets the file's text (or, where a format includes other files, a `read` callable
that maps a relative path to its text or None) and returns a `Parsed`. Errors are SpecErrors
naming the file (joined with the `root` passed in), the line where known, and a fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from envd.model.reqfiles import (
    apt_txt,
    build_envd,
    cog,
    conda,
    devcontainer,
    pipfile,
    pipfile_lock,
    postbuild,
    pylock,
    pyproject,
    python_version,
    requirements_txt,
    runtime_txt,
    uv_lock,
)
from envd.model.reqfiles.apt_txt import parse_apt_txt
from envd.model.reqfiles.base import (
    COMMENT,
    PYPI_INDEXES,
    Parsed,
    Parser,
    Pin,
    Read,
    SetupStep,
    line_of,
    logical_lines,
    shown,
    strip_jsonc,
)
from envd.model.reqfiles.build_envd import parse_build_envd
from envd.model.reqfiles.cog import parse_cog
from envd.model.reqfiles.conda import (
    CONDA_ONLY,
    CONDA_TO_PYPI,
    conda_version,
    parse_environment_yml,
)
from envd.model.reqfiles.devcontainer import parse_devcontainer
from envd.model.reqfiles.pipfile import parse_pipfile
from envd.model.reqfiles.pipfile_lock import parse_pipfile_lock
from envd.model.reqfiles.postbuild import parse_postbuild
from envd.model.reqfiles.pylock import parse_pylock
from envd.model.reqfiles.pyproject import parse_pyproject, poetry_constraint
from envd.model.reqfiles.python_version import parse_python_version
from envd.model.reqfiles.requirements_txt import (
    MAX_INCLUDE_DEPTH,
    MAX_INCLUDE_READS,
    parse_constraints,
    parse_requirements,
)
from envd.model.reqfiles.runtime_txt import parse_runtime_txt
from envd.model.reqfiles.uv_lock import parse_uv_lock

PARSERS: Mapping[str, Parser] = {
    "requirements": requirements_txt.parse,
    "constraints": requirements_txt.parse_as_constraints,
    "pyproject": pyproject.parse,
    "uv.lock": uv_lock.parse,
    "pylock": pylock.parse,
    "Pipfile": pipfile.parse,
    "Pipfile.lock": pipfile_lock.parse,
    "environment.yml": conda.parse,
    "devcontainer": devcontainer.parse,
    "apt.txt": apt_txt.parse,
    "runtime.txt": runtime_txt.parse,
    ".python-version": python_version.parse,
    "postBuild": postbuild.parse,
    "cog": cog.parse,
    "build.envd": build_envd.parse,
}

__all__ = [
    "COMMENT",
    "CONDA_ONLY",
    "CONDA_TO_PYPI",
    "MAX_INCLUDE_DEPTH",
    "MAX_INCLUDE_READS",
    "PARSERS",
    "PYPI_INDEXES",
    "Parsed",
    "Parser",
    "Pin",
    "Read",
    "SetupStep",
    "conda_version",
    "line_of",
    "logical_lines",
    "parse_apt_txt",
    "parse_build_envd",
    "parse_cog",
    "parse_constraints",
    "parse_devcontainer",
    "parse_environment_yml",
    "parse_pipfile",
    "parse_pipfile_lock",
    "parse_postbuild",
    "parse_pylock",
    "parse_pyproject",
    "parse_python_version",
    "parse_requirements",
    "parse_runtime_txt",
    "parse_uv_lock",
    "poetry_constraint",
    "shown",
    "strip_jsonc",
]
