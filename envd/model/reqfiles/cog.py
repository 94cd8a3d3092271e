"""cog.yaml (Replicate's cog): the build section."""

from __future__ import annotations

import re

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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

COG_DEFAULT_PYTHON = "3.13"  # what cog builds when python_version is absent (DefaultConfig)
COG_PACKAGE = "cog"  # the package cog installs in every image; predictors import it
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IGNORED = ("predict", "train", "image", "concurrency")


@_checked
def parse_cog(text: str, read: Read, path: str = "cog.yaml", *, root: str = "") -> Parsed:
    """cog.yaml: build (python_version, python_packages/_requirements, system_packages, run,
    gpu, cuda, python_overrides) and environment; cog's defaults where a key is absent."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(root, path, f"YAML syntax error: {exc}", None) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _error(root, path, "cog.yaml must be a mapping", 1, "compare it with `cog init`'s")
    acc = _Acc(source=path, format="cog")
    build = data.get("build")
    environment = data.get("environment")
    if build is None and isinstance(environment, dict):
        build, environment = environment, None
        acc.notes.append(f"{path}: environment: read as build: (its name before cog 0.1)")
    if build is None:
        build = {}
        acc.notes.append(f"{path}: no `build:` section: cog's defaults")
    if not isinstance(build, dict):
        raise _error(
            root, path, "`build:` must be a mapping", line_of(text, "build"), "see cog.run/yaml"
        )
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
    else:
        acc.python = COG_DEFAULT_PYTHON
        acc.notes.append(
            f"{path}: no python_version: took cog's default, Python {COG_DEFAULT_PYTHON}"
        )
    if build.get("gpu"):
        acc.gpu = True
    if build.get("cuda"):
        acc.cuda = str(build["cuda"])
    for name in build.get("system_packages") or []:
        acc.system.append(str(name))
    _add_requirements(acc, [str(p) for p in build.get("python_packages") or []], path, root, text)
    names = {canonicalize_name(Requirement(r).name) for r in acc.requirements}
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
        names |= {canonicalize_name(Requirement(r).name) for r in included.requirements}
    if COG_PACKAGE not in names:
        acc.requirements.append(COG_PACKAGE)
        acc.notes.append(
            f"added package {COG_PACKAGE} (from PyPI, unpinned; `envctl lock` pins it): cog "
            "installs it in every image, and predictors import it"
        )
    for step in build.get("run") or []:
        if isinstance(step, dict):
            step = step.get("command", "")
        if str(step).strip():
            acc.setup.append(SetupStep(run=str(step).strip()))
    _environment(acc, environment, path, root, text)
    overrides = build.get("python_overrides")
    if overrides:
        line = line_of(text, "python_overrides")
        acc.warnings.append(
            f"{shown(root, path)}:{line}: python_overrides: {overrides} not taken: cog hands "
            "it to uv as overrides, which replace the versions packages ask for; envd.yaml's "
            "`constraints:` only narrow them. Fix: pin those versions in "
            f"{requirements or 'envd.yaml `packages:`'}, then run `envctl lock`"
        )
    for key in ("fast", "cog_runtime", "cudnn", "pre_install"):
        if build.get(key):
            acc.notes.append(f"{path}: build.{key} is cog's; not taken")
    for key in _IGNORED:
        if data.get(key):
            acc.notes.append(f"{path}: {key}: {data[key]} is cog's; not taken over")
    return acc.freeze()


def _environment(acc: _Acc, value: object, path: str, root: str, text: str) -> None:
    """cog's `environment:`, a list of NAME=value, as envd.yaml `env:`."""
    if value is None:
        return
    if not isinstance(value, list):
        acc.warnings.append(f"{path}: environment: is not a list of NAME=value; not taken")
        return
    for item in value:
        name, sep, setting = str(item).partition("=")
        if not sep or not _ENV_NAME.fullmatch(name) or "\n" in setting or "\0" in setting:
            acc.warnings.append(
                f"{shown(root, path)}:{line_of(text, str(item))}: environment: {item!r} is not "
                "NAME=value; left out"
            )
            continue
        acc.env.append((name, setting))
    if acc.env:
        acc.notes.append(f"took env from {path} (environment:)")


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_cog(text, read or _nothing, path, root=root)
