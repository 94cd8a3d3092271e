"""`envctl new NAME --template T`: a whole project from environments/<T>/project/.

The template's files hold the placeholder `__project__`. In Python files, in path parts and
where it names a module (`__project__.train`, `__project__/`) it becomes the Python package
name; elsewhere (envd.yaml's `name:`, README titles) the project name.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

from envd.errors import Conflict, NotFound, UsageError
from envd.gateways.store import ProjectRow
from envd.model.spec import suggest_name
from envd.services.projects import Projects
from envd.services.templates import templates_dir

PLACEHOLDER = "__project__"
_MODULE_USE = re.compile(re.escape(PLACEHOLDER) + r"(?=[./])")
_SKIP = {"__pycache__", ".ruff_cache", ".pytest_cache", ".mypy_cache"}
_PROJECT_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$")


@dataclass(frozen=True)
class NewProject:
    project: ProjectRow
    package: str
    files: tuple[str, ...]


def package_name(name: str) -> str:
    """A valid Python package name for project `name` (`churn-model` -> `churn_model`)."""
    text = re.sub(r"[^0-9a-zA-Z_]", "_", name).lower().strip("_")
    text = re.sub(r"_+", "_", text) or "project"
    if text[0].isdigit():
        text = "p_" + text
    if keyword.iskeyword(text) or text in {"test", "tests"}:
        text += "_project"
    return text


def substitute(relative: str, text: str, name: str, package: str) -> str:
    if relative.endswith(".py"):
        return text.replace(PLACEHOLDER, package)
    return _MODULE_USE.sub(package, text).replace(PLACEHOLDER, name)


def create(projects: Projects, name: str, template: str, directory: Path) -> NewProject:
    if not _PROJECT_NAME.match(name):
        raise UsageError(
            f"{name!r} is not a valid project name",
            hint=f"lowercase letters, digits, - _ . between them, e.g. `{suggest_name(name)}`",
        )
    source = templates_dir() / (template or "default") / "project"
    if not source.is_dir():
        available = sorted(p.parent.name for p in templates_dir().glob("*/project"))
        raise NotFound(
            f"no project template named `{template}`",
            hint=f"project templates are: {', '.join(available)}",
        )
    target = directory.expanduser().resolve()
    if target.exists() and any(target.iterdir()):
        raise Conflict(
            f"{target} exists and is not empty; `new` never overwrites",
            hint="pick another NAME or folder",
        )
    package = package_name(name)
    written: list[str] = []
    for path in sorted(source.rglob("*")):
        parts = path.relative_to(source).parts
        if _SKIP.intersection(parts) or path.suffix in (".pyc", ".pyo"):
            continue
        relative = Path(*(package if part == PLACEHOLDER else part for part in parts))
        out = target / relative
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        out.write_text(substitute(relative.as_posix(), text, name, package), encoding="utf-8")
        written.append(relative.as_posix())
    row = projects.add(target)
    return NewProject(row, package, tuple(written))
