"""`project:`'s own dependencies, locked with everything else.

envd installs the project without resolving anything at build time, so what the project
depends on must be in envd.lock. With `project:` set, envd.yaml's requirements are taken to
include the project's own: pyproject.toml's [project] dependencies (as if `requirements:`
named pyproject.toml), or, for a setuptools project without [project], setup.cfg's or
setup.py's literal install_requires (envd/model/setupmeta.py). `envctl lock` then pins them,
and a lock that lacks them is stale: the gap is found at lock, never first at build.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.model.setupmeta import SetupError, read_setup
from envd.model.spec import IsFile
from envd.model.spec_requirements import (
    BadRequirement,
    RequirementsRead,
    RequirementsSection,
    check_requirement,
)


def project_requirements(
    section: RequirementsSection, is_file: IsFile | None, node: yaml.Node, read: RequirementsRead
) -> RequirementsRead:
    """The project's dependencies as one more requirements file's worth (files read included,
    so that they are watched and their changes make the lock stale)."""
    read_text = section.read_text
    if read_text is None or is_file is None or "pyproject.toml" in read.files:
        return RequirementsRead()
    if is_file("pyproject.toml"):
        text = section.read_file("pyproject.toml", node, "project", top=True) or ""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = {"project": {}}  # said by the pyproject parser, at its line
        if isinstance(data.get("project"), dict):
            found = section.requirements_file("pyproject.toml", text, node, "project", True)
            local = _uv_sources(data)
            kept = tuple(
                r for r in found.requirements if canonicalize_name(Requirement(r).name) not in local
            )
            found = replace(found, requirements=kept)
            return RequirementsRead(files=("pyproject.toml",)).plus(found)
    names = [name for name in ("setup.cfg", "setup.py") if is_file(name)]
    if not names:
        return RequirementsRead()
    texts = {name: section.read_file(name, node, "project", top=True) for name in names}
    try:
        meta = read_setup(texts.get("setup.py"), texts.get("setup.cfg"))
    except SetupError as exc:
        raise section.error(
            f"`project:` needs the project's dependencies before it is built: {exc.message}",
            node,
            "project",
            hint=exc.hint,
        ) from None
    requirements = []
    for text in meta.install_requires or ():
        try:
            requirements.append(check_requirement(text))
        except BadRequirement as exc:
            raise section.error(
                f"{meta.source}: install_requires `{text}`: {exc.message}",
                node,
                "project",
                hint=exc.hint,
            ) from None
    return RequirementsRead(files=tuple(names), requirements=tuple(requirements))


def _uv_sources(data: dict[str, object]) -> set[str]:
    """Names [tool.uv.sources] takes from elsewhere than the index (a workspace member, a
    path, git, a URL): uv.lock pins them, and resolving the bare name from the index would
    install something else."""
    tool = data.get("tool")
    uv = tool.get("uv") if isinstance(tool, dict) else None
    sources = uv.get("sources") if isinstance(uv, dict) else None
    if not isinstance(sources, dict):
        return set()
    return {str(canonicalize_name(name)) for name in sources}
