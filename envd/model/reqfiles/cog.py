"""cog.yaml (Replicate's cog): the build section."""

from __future__ import annotations

import re

import yaml

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    SetupStep,
    _Acc,
    _add_requirements,
    _checked,
    _error,
    _nothing,
    line_of,
    shown,
)
from envd.model.reqfiles.requirements_txt import parse_requirements


@_checked
def parse_cog(text: str, read: Read, path: str = "cog.yaml", *, root: str = "") -> Parsed:
    """cog.yaml build: python_version, python_packages/_requirements, system_packages, run."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(root, path, f"YAML syntax error: {exc}", None) from None
    build = data.get("build") if isinstance(data, dict) else None
    if not isinstance(build, dict):
        raise _error(root, path, "no `build:` section", 1, "cog.yaml needs `build:`")
    acc = _Acc(source=path, format="cog")
    version = build.get("python_version")
    if version is not None:
        if isinstance(version, float):
            written = re.search(r"python_version:\s*([0-9.]+)", text)
            raw = written.group(1) if written else str(version)
            raise _error(
                root,
                path,
                f"python_version {raw} is a number, which YAML reads as {version}",
                line_of(text, "python_version"),
                f'quote it: python_version: "{raw}"',
            )
        acc.python = str(version)
    if build.get("gpu"):
        acc.gpu = True
    if build.get("cuda"):
        acc.cuda = str(build["cuda"])
    for name in build.get("system_packages") or []:
        acc.system.append(str(name))
    _add_requirements(acc, [str(p) for p in build.get("python_packages") or []], path, root, text)
    requirements = build.get("python_requirements")
    if requirements:
        included = parse_requirements(str(requirements), read, root=root)
        acc.files.extend([path, *included.files])
        acc.requirement_files.append(str(requirements))
        acc.project = included.project
        for url in included.indexes:
            acc.index(url)
        acc.notes.extend(included.notes)
        acc.warnings.extend(included.warnings)
    for step in build.get("run") or []:
        if isinstance(step, dict):
            step = step.get("command", "")
        if str(step).strip():
            acc.setup.append(SetupStep(run=str(step).strip()))
    if data.get("predict"):
        acc.notes.append(
            f"{shown(root, path)}: predict: {data['predict']} is cog's; not taken over"
        )
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_cog(text, read or _nothing, path, root=root)
