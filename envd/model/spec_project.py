"""`project:`'s own dependencies, locked with everything else.

envd installs the project without resolving anything at build time, so what the project
depends on must be in envd.lock. With `project:` set, envd.yaml's requirements are taken to
include the project's own: pyproject.toml's [project] dependencies (as if `requirements:`
named pyproject.toml), or, for a setuptools project without [project], setup.cfg's or
setup.py's literal install_requires (envd/model/setupmeta.py). `envctl lock` then pins them,
and a lock that lacks them is stale: the gap is found at lock, never first at build.
"""

from __future__ import annotations

import hashlib
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.model import reqfiles
from envd.model.reqfiles import localpath
from envd.model.setupmeta import SetupError, cfg_named_files, named_files, read_setup
from envd.model.spec import FileRefused, IsFile
from envd.model.spec_requirements import (
    BadRequirement,
    RequirementsRead,
    RequirementsSection,
    check_requirement,
    direct_reference,
)


def project_requirements(
    section: RequirementsSection,
    is_file: IsFile | None,
    node: yaml.Node,
    read: RequirementsRead,
    key: str = "project",
) -> RequirementsRead:
    """The project's dependencies as one more requirements file's worth (files read included,
    so that they are watched and their changes make the lock stale). `key`: the envd.yaml key
    that installs the project (`requirements` for a uv.lock that installs its root)."""
    if section.read_text is None or is_file is None or "pyproject.toml" in read.files:
        return RequirementsRead()
    if is_file("pyproject.toml"):
        text = section.read_file("pyproject.toml", node, key, top=True) or ""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = {"project": {}}  # said by the pyproject parser, at its line
        if isinstance(data.get("project"), dict):
            parsed = reqfiles.parse_pyproject(text, "pyproject.toml", root=section.project_dir)
            taken = _taken(section, node, key, "pyproject.toml", parsed.requirements, read, data)
            return RequirementsRead(files=("pyproject.toml",), requirements=taken)
    names = [name for name in ("setup.cfg", "setup.py") if is_file(name)]
    if not names:
        return RequirementsRead()
    texts = {name: section.read_file(name, node, key, top=True) for name in names}
    try:
        meta = read_setup(texts.get("setup.py"), texts.get("setup.cfg"))
    except SetupError as exc:
        if exc.computable:  # computed at lock by the legacy backend, in a throwaway container
            computed = _computed_from(section, is_file, texts)
            return RequirementsRead(files=tuple(names), computed=computed)
        raise section.error(
            f"`project:` needs the project's dependencies before it is built: {exc.message}",
            node,
            key,
            hint=exc.hint,
        ) from None
    taken = _taken(section, node, key, meta.source, meta.install_requires or (), read, {})
    return RequirementsRead(files=tuple(names), requirements=taken)


def _computed_from(
    section: RequirementsSection, is_file: IsFile, texts: dict[str, str | None]
) -> tuple[str, ...]:
    """ "relpath sha256:<hex>" of the files setup.py's metadata is computed from: setup.py,
    setup.cfg, pyproject.toml, and every project file setup.py names literally (a
    requirements.txt it reads, the module it takes the version from). Recorded in the lock's
    inputs, so a change to any of them makes the lock stale."""
    candidates = ["setup.py", "setup.cfg", "pyproject.toml"]
    named = named_files(texts.get("setup.py") or "") + cfg_named_files(texts.get("setup.cfg") or "")
    candidates += [
        relpath
        for where, relpath in (localpath.locate("setup.py", name) for name in named)
        if where == "inside"
    ]
    out: list[str] = []
    for relpath in dict.fromkeys(candidates):
        text = texts.get(relpath)
        if text is None:
            if relpath in texts or not is_file(relpath) or section.read_text is None:
                continue
            try:
                text = section.read_text(relpath)
            except (OSError, ValueError, FileRefused):
                continue  # not a text file envd may read: not hashed
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        out.append(f"{relpath} sha256:{digest}")
    return tuple(out)


def _taken(
    section: RequirementsSection,
    node: yaml.Node,
    key: str,
    source: str,
    requirements: tuple[str, ...],
    read: RequirementsRead,
    pyproject: dict[str, object],
) -> tuple[str, ...]:
    """The project's requirements to lock: those [tool.uv.sources] takes from elsewhere are
    left to uv.lock, and a URL or VCS one to the requirements file that already names that
    package (where envd reads how to get it); any other is checked as envd checks them all."""
    elsewhere = _uv_sources(pyproject)
    named = {canonicalize_name(Requirement(r).name) for r in read.requirements}
    out: list[str] = []
    for text in requirements:
        name = canonicalize_name(Requirement(text).name)
        if name in elsewhere or (direct_reference(text) is not None and name in named):
            continue
        try:
            out.append(check_requirement(text))
        except BadRequirement as exc:
            raise section.error(
                f"{source}: the project's requirement `{text}`: {exc.message}",
                node,
                key,
                hint=exc.hint,
            ) from None
    return tuple(out)


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
