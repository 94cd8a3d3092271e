"""`envctl init` in a project that already has files: the envd.yaml its author would write.

Pure: `adopt` gets the project's files as a mapping of relative path to text and returns the
envd.yaml text plus notes saying what was taken from where. Files may sit at the root or, as
repo2docker reads them, under binder/ or .binder/ (which then hide the root's copies).

    found     `_Found` (what has been found so far), `Adopted`, the suites and binder/ files
    sources   one function per kind of file; whether envd can install the project
    python    the base and the Python, from the versions found
    render    the template merged, and the envd.yaml text
    core      `adopt`, which runs them in that order
"""

from __future__ import annotations

from envd.model.adopt.core import adopt, project_name
from envd.model.adopt.found import (
    BINDER_FILES,
    DEFAULT_SUITE,
    LOCKS,
    SUITES,
    Adopted,
    Where,
    _Found,
)
from envd.model.adopt.python import _SUITE_PYTHONS
from envd.model.adopt.render import render
from envd.model.adopt.sources import project_problem

__all__ = [
    "BINDER_FILES",
    "DEFAULT_SUITE",
    "LOCKS",
    "SUITES",
    "_SUITE_PYTHONS",
    "Adopted",
    "Where",
    "_Found",
    "adopt",
    "project_name",
    "project_problem",
    "render",
]
