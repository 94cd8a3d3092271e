"""`envctl init` in a project that already has files: adopt them into envd.yaml.

Reads the files envd.model.adopt understands (requirements.txt and what it includes,
pyproject.toml, uv.lock, pylock.toml, Pipfile(.lock), environment.yml, apt.txt, runtime.txt,
.python-version, postBuild, cog.yaml, build.envd (parsed, never run), devcontainer.json, also
under binder/ or .binder/) through the bounded readers of envd.gateways.projectfiles, and
writes the envd.yaml `adopt()` makes, after checking it as `envctl lock` will read it. A
template, when named, is merged under the project's own files. An existing envd.yaml is never
overwritten.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from envd.errors import Conflict, NotFound, SpecError
from envd.gateways.projectfiles import parse_spec_text, read_project_file
from envd.model.adopt import BINDER_FILES, LOCKS, adopt
from envd.model.spec import SPEC_FILENAME
from envd.services.templates import list_templates

# Files adopt() reads only at the project's root.
ROOT_FILES = (
    "cog.yaml",
    "build.envd",
    ".python-version",
    "pyproject.toml",
    "setup.py",
    "setup.cfg",
    "constraints.txt",
    ".devcontainer/devcontainer.json",
    ".devcontainer.json",
    *LOCKS,
)
CONFIG_DIRS = ("", "binder/", ".binder/")
MAX_FILES = 200  # every file read, includes too: a project's environment files, not its data
_INCLUDE = re.compile(r"(?:^|\s)(?:-r|-c|--requirement|--constraint)(?:\s+|=)?([^\s#]+)")
_COG_REQUIREMENTS = re.compile(r"^\s*python_requirements:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)
# build.envd's install.python_packages(requirements="..."), read without running the file
_ENVD_REQUIREMENTS = re.compile(r"\brequirements\s*=\s*['\"]([^'\"\n]+)['\"]")


@dataclass(frozen=True)
class AdoptionResult:
    """What `init` wrote from the project's files, and what it took from where."""

    path: Path  # the envd.yaml written
    text: str
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    files: tuple[str, ...]  # the project files taken (relative paths)


class Adoption:
    def adopt_into(self, directory: Path, template: str = "") -> AdoptionResult | None:
        """Write directory/envd.yaml adopted from its files, or None when it has none to adopt.

        `template` (a template name, "" for none) is merged under what the files say.
        """
        root = directory.expanduser().resolve()
        target = root / SPEC_FILENAME
        if target.exists() or target.is_symlink():
            raise Conflict(
                f"{target} already exists; init never overwrites it",
                hint="edit it, or remove it first",
            )
        if not root.is_dir():
            return None
        files = read_environment_files(root)
        if not files:
            return None
        adopted = adopt(files, root.name, _template(template) if template else None, root=str(root))
        if not adopted.files:
            return None
        parse_spec_text(adopted.text, root)  # as `envctl lock` will read it, before writing
        try:
            with open(target, "x", encoding="utf-8") as f:
                f.write(adopted.text)
        except FileExistsError:
            raise Conflict(
                f"{target} already exists; init never overwrites it",
                hint="edit it, or remove it first",
            ) from None
        return AdoptionResult(
            path=target,
            text=adopted.text,
            notes=adopted.notes,
            warnings=adopted.warnings,
            files=adopted.files,
        )


def read_environment_files(root: Path) -> dict[str, str]:
    """The project's environment files (relative path -> text), with the files they include."""
    names = [f"{d}{name}" for d in CONFIG_DIRS for name in BINDER_FILES] + list(ROOT_FILES)
    files: dict[str, str] = {}
    pending = list(dict.fromkeys(names))
    seen: set[str] = set()
    while pending and len(files) < MAX_FILES:
        relpath = pending.pop(0)
        if relpath in seen:
            continue
        seen.add(relpath)
        if (root / relpath).is_dir():
            continue  # e.g. a folder called `start`: not an environment file
        text = read_project_file(root, relpath)
        if text is None:
            continue
        files[relpath] = text
        pending.extend(p for p in _included(relpath, text) if p not in seen)
    return files


def _included(relpath: str, text: str) -> list[str]:
    """Files a requirements file, environment.yml or cog.yaml names (inside the project)."""
    here = posixpath.dirname(relpath)
    found: list[str] = []
    if posixpath.basename(relpath) == "cog.yaml":
        found += _COG_REQUIREMENTS.findall(text)
    elif relpath == "build.envd":
        found += _ENVD_REQUIREMENTS.findall(text)
    elif relpath.endswith((".txt", ".in", "environment.yml", "environment.yaml")):
        for line in text.splitlines():
            found += _INCLUDE.findall(line.split(" #", 1)[0])
    out = []
    for name in found:
        name = name.strip().strip("'\"")
        joined = posixpath.normpath(posixpath.join(here, name))
        if name and not name.startswith("/") and not joined.startswith(".."):
            out.append(joined)
    return out


def _template(name: str) -> dict[str, Any]:
    by_name = {t.name: t for t in list_templates()}
    if name not in by_name:
        raise NotFound(
            f"no template named `{name}`", hint=f"templates are: {', '.join(sorted(by_name))}"
        )
    path = by_name[name].path
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise SpecError("a template must be a mapping", file=str(path))
    return document
