"""What `adopt` has found so far (`_Found`), what it returns (`Adopted`), and the facts about
the files it reads that its parts share: the suites envd builds from, repo2docker's binder/
files, the lock formats.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import Requirement

from envd.model.reqfiles import Parsed

# Debian suites envd builds from, and the Python each ships; the default first.
SUITES: tuple[tuple[str, str], ...] = (
    ("bookworm", "3.11"),
    ("trixie", "3.13"),
    ("bullseye", "3.9"),
)
DEFAULT_SUITE = "bookworm"
# Files repo2docker looks for in binder/ (or .binder/) instead of the root.
BINDER_FILES = (
    "requirements.txt",
    "environment.yml",
    "environment.yaml",
    "apt.txt",
    "runtime.txt",
    "postBuild",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "start",
    "install.R",
    "REQUIRE",
    "Project.toml",
)
LOCKS = ("uv.lock", "pylock.toml", "Pipfile.lock")
Where = Callable[[str], str | None]  # a file name -> its path in the project, if there


@dataclass(frozen=True)
class Adopted:
    """The envd.yaml text, the same document as data, and what was taken from where."""

    text: str
    document: Mapping[str, Any]
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # the project files read


@dataclass
class _Found:
    doc: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # (python as written, the file it came from), exact versions and constraints kept apart
    pythons: list[tuple[str, str]] = field(default_factory=list)
    python_ranges: list[tuple[str, str]] = field(default_factory=list)
    project_lines: list[str] = field(default_factory=list)  # requirements files' `-e .`

    def take(self, parsed: Parsed) -> None:
        for path in parsed.files:
            if path not in self.files:
                self.files.append(path)
        self.notes.extend(parsed.notes)
        self.warnings.extend(parsed.warnings)
        if parsed.python:
            if re.fullmatch(r"\d+", parsed.python):
                self.python_ranges.append((f"=={parsed.python}.*", parsed.source))
            elif re.fullmatch(r"\d+(\.\d+){1,2}", parsed.python):
                self.pythons.append((parsed.python, parsed.source))
            else:
                self.python_ranges.append((parsed.python, parsed.source))

    def extend(self, key: str, items: list[Any] | tuple[Any, ...], source: str, what: str) -> None:
        items = [item for item in items if self.allowed(key, item, source)]
        if not items:
            return
        current = self.doc.setdefault(key, [])
        for item in items:
            if item not in current:
                current.append(item)
        self.notes.append(f"took {what} from {source}")

    def allowed(self, key: str, item: Any, source: str) -> bool:
        """What envd.yaml refuses is left out with a warning instead of written."""
        if key == "packages" and Requirement(item).url:
            self.warnings.append(
                f"{source}: `{item}` is a direct URL reference, which `packages:` refuses; left "
                "out: list it in a requirements file and name that in `requirements:`"
            )
            return False
        if key == "indexes" and urlsplit(item).username:
            self.warnings.append(
                f"{source}: index {urlsplit(item).hostname} carries credentials, which envd.yaml "
                "refuses; left out: give them to uv through its environment (UV_INDEX_...)"
            )
            return False
        return True
