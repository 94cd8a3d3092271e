"""Pipfile (pipenv's TOML)."""

from __future__ import annotations

import re

from envd.model.reqfiles import localpath
from envd.model.reqfiles.base import (
    Parsed,
    Read,
    _Acc,
    _add_requirements,
    _checked,
    _error,
    _is_project,
    _table,
    _toml,
    line_of,
    shown,
)

# a local path that names a file (a built wheel or sdist), not a package folder
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


@_checked
def parse_pipfile(text: str, path: str = "Pipfile", *, root: str = "", dev: bool = False) -> Parsed:
    """Pipfile: [packages] ("*", version strings, tables), [[source]], [requires]."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="Pipfile")
    for source in data.get("source", []):
        if isinstance(source, dict) and isinstance(source.get("url"), str):
            acc.index(source["url"])
    requires = data.get("requires", {})
    acc.python = requires.get("python_full_version") or requires.get("python_version")
    sections = ["packages", "dev-packages"] if dev else ["packages"]
    if not dev and data.get("dev-packages"):
        acc.notes.append(f"{shown(root, path)}: [dev-packages] left out")
    for section in sections:
        for name, value in _table(data.get(section), path, root, section, text).items():
            line = line_of(text, f"{name} =") or line_of(text, name)
            if isinstance(value, str):
                req = name if value.strip() == "*" else f"{name}{_pipenv_version(value)}"
            elif isinstance(value, dict):
                if _is_project(path, value.get("path")):
                    acc.project = "editable" if value.get("editable") else "install"
                    acc.project_name = name
                    continue
                if "path" in value or "file" in value:
                    written = str(value.get("path", value.get("file")))
                    where, target = localpath.locate(path, written)
                    if where == "outside":
                        message, hint = localpath.outside_message(f"`{name}`: path", written)
                        raise _error(root, path, message, line, hint)
                    if "path" in value and not written.endswith(_ARCHIVES):
                        # a package folder in the project: installed editable from the
                        # project's files, its own dependencies read from its metadata and
                        # locked with the rest (envd.model.spec_project.member_requirements)
                        if target not in acc.members:
                            acc.members.append(target)
                        if not value.get("editable"):
                            at = f"{shown(root, path)}:{line}"
                            acc.notes.append(localpath.installed_editable_note(at, name, target))
                        continue
                    message, _ = localpath.inside_message(f"`{name}`: path", target)
                    acc.warnings.append(f"{shown(root, path)}:{line}: {message}; left out")
                    continue
                extras = value.get("extras") or []
                extra = f"[{','.join(extras)}]" if extras else ""
                if "git" in value:
                    ref = value.get("ref")
                    req = f"{name}{extra} @ git+{value['git']}" + (f"@{ref}" if ref else "")
                else:
                    version = str(value.get("version", "*"))
                    req = f"{name}{extra}" + ("" if version == "*" else _pipenv_version(version))
                if value.get("markers"):
                    req += f"; {value['markers']}"
            else:
                raise _error(root, path, f"`{name}`: expected a version string or a table", line)
            _add_requirements(acc, [req], path, root, text)
    return acc.freeze()


def _pipenv_version(value: str) -> str:
    value = value.strip()
    return f"=={value}" if re.match(r"^[0-9]", value) else value


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_pipfile(text, path, root=root)
