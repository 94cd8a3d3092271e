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
import posixpath
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
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


_PIN_IN_LOCK = (
    "or pin the dependencies in a Pipfile.lock (`pipenv lock`) and name it in `requirements:`"
)


def member_requirements(
    section: RequirementsSection, is_file: IsFile | None, node: yaml.Node, read: RequirementsRead
) -> RequirementsRead:
    """The own dependencies of the local packages no lock file pins for (a Pipfile's
    `{path = "sub"}` without a Pipfile.lock), read statically as the project's are:
    sub/pyproject.toml [project], else sub/setup.cfg or the literal keywords of sub/setup.py
    (never run). They are locked with the rest, and the files read are watched, so a change
    to a member's dependencies makes the lock stale. Another member named by name is not
    resolved from an index: it is installed from its folder."""
    if section.read_text is None or is_file is None or not read.unpinned_members:
        return RequirementsRead()
    files: list[str] = []
    found: list[tuple[str, str, tuple[str, ...]]] = []  # (member, source file, requirements)
    names: set[str] = set()
    for member in read.unpinned_members:
        name, source, requirements, read_files = _member_metadata(section, is_file, node, member)
        files += [f for f in read_files if f not in files]
        found.append((member, source, requirements))
        if name:
            names.add(str(canonicalize_name(name)))
    taken: list[str] = []
    for member, source, requirements in found:
        for text in requirements:
            if str(canonicalize_name(Requirement(text).name)) in names:
                continue
            try:
                checked = check_requirement(text)
            except BadRequirement as exc:
                raise SpecError(
                    f"the local package `{member}`'s requirement `{text}`: {exc.message}",
                    file=section.absolute(source),
                    hint=exc.hint,
                ) from None
            if checked not in taken:
                taken.append(checked)
    return RequirementsRead(files=tuple(files), requirements=tuple(taken))


def _member_metadata(
    section: RequirementsSection, is_file: IsFile, node: yaml.Node, member: str
) -> tuple[str | None, str, tuple[str, ...], tuple[str, ...]]:
    """(name, the file the dependencies come from, the dependencies, the files read)."""
    relpath = f"{member}/pyproject.toml"
    watched: tuple[str, ...] = ()
    if is_file(relpath):
        watched = (relpath,)  # adding [project] there changes where the dependencies come from
        text = section.read_file(relpath, node, "requirements", top=True) or ""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(
                f"the local package `{member}`: pyproject.toml is not valid TOML ({exc})",
                file=section.absolute(relpath),
                hint="fix its syntax",
            ) from None
        project = data.get("project")
        if isinstance(project, dict):
            if "dependencies" in (project.get("dynamic") or []):
                raise SpecError(
                    f"the local package `{member}` has dynamic dependencies (computed by its "
                    "build backend): envd locks a local package's dependencies before it is "
                    "built, without running anything",
                    file=section.absolute(relpath),
                    hint="list them in [project] dependencies, " + _PIN_IN_LOCK,
                )
            parsed = reqfiles.parse_pyproject(text, relpath, root=section.project_dir)
            return parsed.project_name, relpath, parsed.requirements, (relpath,)
    names = [f"{member}/{n}" for n in ("setup.cfg", "setup.py") if is_file(f"{member}/{n}")]
    if not names:
        raise SpecError(
            f"the local package `{member}` has no pyproject.toml [project], setup.cfg or "
            "setup.py: envd reads its name, version and dependencies from one of them",
            file=section.absolute(member),
            hint="add a pyproject.toml with [project] name, version and dependencies there, "
            "or remove its `path` entry",
        )
    texts = {
        posixpath.basename(n): section.read_file(n, node, "requirements", top=True) for n in names
    }
    try:
        meta = read_setup(texts.get("setup.py"), texts.get("setup.cfg"))
    except SetupError as exc:
        why = (
            " (computed when setup.py runs; envd computes that only for the project itself)"
            if exc.computable
            else ""
        )
        raise SpecError(
            f"the local package `{member}`: {exc.message}{why}",
            file=section.absolute(names[-1]),
            hint=f"{exc.hint}; {_PIN_IN_LOCK}",
        ) from None
    source = f"{member}/{meta.source}" if meta.source else names[-1]
    return meta.name, source, meta.install_requires or (), watched + tuple(names)
