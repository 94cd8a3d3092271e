"""`adopt`: each kind of file read in turn (sources), base and Python chosen (python), the
template merged and the text written (render)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from envd.model import adopt_builders
from envd.model.adopt.found import BINDER_FILES, SUITES, Adopted, _Found
from envd.model.adopt.python import _choose_base, _python_auto
from envd.model.adopt.render import _merge, render
from envd.model.adopt.sources import (
    _check_project,
    _cog,
    _config_dir,
    _devcontainer,
    _extras,
    _python_files,
    _python_packages,
    _system,
)
from envd.model.spec import KEYS


def adopt(
    files: Mapping[str, str],
    directory_name: str,
    template: Mapping[str, Any] | None = None,
    *,
    root: str = "",
) -> Adopted:
    """The envd.yaml for a project whose files (relative path -> text) are given."""
    found = _Found()
    config = _config_dir(files, root)

    def where(name: str) -> str | None:
        if name in BINDER_FILES and config:
            path = f"{config}/{name}"
            return path if path in files else None
        return name if name in files else None

    if config:
        found.notes.append(f"used {config}/ for environment files (root copies ignored)")
    _cog(found, files, root)
    adopt_builders.take_build_envd(found, files, root)
    _python_files(found, where, files, root)
    _system(found, where, files, root)
    _python_packages(found, where, files, root)
    _extras(found, where, files, root)
    _devcontainer(found, files, root)
    _choose_base(found, root, at=1 if config else 0)
    _check_project(found, files, root)
    document = _merge(template or {}, found.doc)
    document["version"] = 1
    document["name"] = project_name(directory_name)
    _python_auto(document, found.notes)
    if "python" not in document and "debian" in document.get("base", {}):
        suite = document["base"]["debian"]
        python = dict(SUITES).get(suite)
        if python:
            document["python"] = python
    if not found.files:
        found.notes.append("no environment files found; wrote the defaults")
    ordered = {key: document[key] for key in KEYS if key in document}
    ordered.update({k: v for k, v in document.items() if k not in ordered})
    return Adopted(
        text=render(ordered, found.files),
        document=ordered,
        notes=tuple(dict.fromkeys(found.notes)),
        warnings=tuple(dict.fromkeys(found.warnings)),
        files=tuple(found.files),
    )


def project_name(directory_name: str) -> str:
    """The directory name as a Docker repository component: [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*."""
    name = re.sub(r"[^a-z0-9._-]+", "-", directory_name.lower())
    name = re.sub(r"[._-]{2,}", lambda m: m.group(0) if m.group(0) == "__" else "-", name)
    name = re.sub(r"-{2,}", "-", name)
    return name[:128].strip("._-") or "project"
