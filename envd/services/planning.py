"""The build plan of a project's lock, with what the plan needs from the project's own files
(setup steps' files, the project package): one function, so that the builder, the current-image
check and sharing all name a project's image alike."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
from envd.gateways.projectfiles import find_project_package, read_project_file, read_setup_files
from envd.gateways.store import ProjectRow
from envd.model import plan as p
from envd.model.lockfile import LockFile
from envd.model.setupmeta import (
    ComputedMetadata,
    SetupError,
    attr_module_files,
    dynamic_version_attr,
    literal_attr,
    read_setup,
)


def plan_for(row: ProjectRow, lock: LockFile, namespace: str) -> p.BuildPlan:
    """The plan `envctl build` would run for this lock now (reads the files it names)."""
    inputs = read_project_inputs(row.path, lock)
    return p.make_plan(
        row.name,
        lock,
        namespace,
        setup_files=inputs.setup_files,
        package=inputs.package,
        members=inputs.members,
    )


@dataclass(frozen=True)
class ProjectInputs:
    """What a build reads from the project besides envd.lock: the setup steps' files and,
    for `project:`, its pyproject.toml and package (digests go into the plan, the bytes, by
    sha256, into the steps that write them)."""

    setup_files: p.SetupFiles = field(default_factory=dict)
    package: p.ProjectPackage | None = None
    contents: dict[str, bytes] = field(default_factory=dict)  # sha256 hex -> bytes
    members: tuple[p.ProjectPackage, ...] = ()  # local packages in subfolders (editable)


def read_project_inputs(project_dir: str, lock: LockFile) -> ProjectInputs:
    entries = sorted({entry for files in lock.inputs.setup_files for entry in files})
    setup: dict[str, tuple[p.StepFile, ...]] = {}
    contents: dict[str, bytes] = {}
    for entry, files in read_setup_files(project_dir, entries).items() if entries else ():
        listed = []
        for relpath, data, executable in files:
            digest = hashlib.sha256(data).hexdigest()
            contents[digest] = data
            listed.append(p.StepFile(relpath, digest, executable))
        setup[entry] = tuple(listed)
    members = tuple(_read_member(project_dir, member) for member in lock.inputs.members)
    local = {str(canonicalize_name(m.name)) for m in members}
    package = None
    if lock.inputs.project:
        package = _read_package(project_dir, lock, contents)
        what = f"`project: {lock.inputs.project}`"
        _check_dependencies_locked(project_dir, lock, package, local, what)
    for member in members:
        what = f"the local package `{member.location}`"
        _check_dependencies_locked(project_dir, lock, member, local, what)
    return ProjectInputs(setup, package, contents, members)


def _parse_pyproject(project_dir: str, folder: str, text: str) -> p.ProjectPackage:
    """pyproject.toml's [project]; a version setuptools takes from `attr` is read from the
    module's literal assignment, without running it (as setuptools reads it first)."""
    attr = dynamic_version_attr(text)
    version = _attr_version(project_dir, folder, attr) if attr is not None else None
    return p.read_pyproject(text, version)


def _attr_version(project_dir: str, folder: str, attr: str, package_dir: str = "") -> str | None:
    """The literal string `attr` names in its module, found as setuptools finds it."""
    for relpath in attr_module_files(attr, package_dir):
        module = read_project_file(project_dir, f"{folder}/{relpath}" if folder else relpath)
        if module is not None:
            return literal_attr(module, attr)
    return None


def _read_member(project_dir: str, member: str) -> p.ProjectPackage:
    """A local package in a subfolder (a uv workspace member) as the project step installs it
    editable: its pyproject.toml [project], its import packages found under the folder."""
    relpath = f"{member}/pyproject.toml"
    where = f"{project_dir}/{relpath}"
    text = read_project_file(project_dir, relpath)
    if text is None or not p.has_project_table(text):
        package = _member_from_setup(project_dir, member)
        if package is not None:
            source, _ = find_project_package(f"{project_dir}/{member}", p.import_name(package.name))
            source = source or package.source
            return replace(package, source=f"{member}/{source}".rstrip("/"), location=member)
    if text is None:
        raise SpecError(
            f"the local package `{member}` has no pyproject.toml, setup.cfg or setup.py: envd "
            "installs it from its [project] table or its setuptools metadata",
            file=where,
            hint="add a pyproject.toml with [project] name and version there, or remove the "
            "package from the workspace (`uv lock` again)",
        )
    try:
        package = _parse_pyproject(project_dir, member, text)
    except p.ProjectError as exc:
        raise SpecError(
            f"the local package `{member}`: {exc}",
            file=where,
            hint="envd reads [project] name, version, dependencies and scripts (PEP 621)",
        ) from None
    source, _ = find_project_package(f"{project_dir}/{member}", p.import_name(package.name))
    return replace(package, source=f"{member}/{source}".rstrip("/"), location=member)


def _member_from_setup(project_dir: str, member: str) -> p.ProjectPackage | None:
    """A local package with only setup.py/setup.cfg: their metadata read statically, as the
    project's own is (None when it has neither). Metadata such a setup.py computes is refused
    with the reason: only the project's own is computed in a container at lock."""
    setup_py = read_project_file(project_dir, f"{member}/setup.py")
    setup_cfg = read_project_file(project_dir, f"{member}/setup.cfg")
    if setup_py is None and setup_cfg is None:
        return None
    name = "setup.py" if setup_py is not None else "setup.cfg"
    where = f"{project_dir}/{member}/{name}"
    try:
        meta = read_setup(setup_py, setup_cfg)
        if meta.version is None and meta.version_attr is not None:
            version = _attr_version(project_dir, member, meta.version_attr, meta.package_dir)
            meta = replace(meta, version=version)
        return p.package_from_setup(meta)
    except SetupError as exc:
        hint = exc.hint
        if exc.computable:
            hint = (
                f"{hint}; envd computes setup.py's metadata in a container only for the "
                "project itself, not yet for a local package in a subfolder"
            )
        raise SpecError(
            f"the local package `{member}`: {exc.message}", file=where, hint=hint
        ) from None
    except p.ProjectError as exc:
        raise SpecError(
            f"the local package `{member}`: {exc}",
            file=where,
            hint="write name= and version= literally in setup(...), or in setup.cfg [metadata]",
        ) from None


def _check_dependencies_locked(
    project_dir: str, lock: LockFile, package: p.ProjectPackage, local: set[str], what: str
) -> None:
    """The project's own dependencies must be in envd.lock (`envctl lock` locks them with the
    rest, envd/model/spec_project.py): envd installs the project, never resolves for it at
    build time. A lock written before that lacks them."""
    pinned = {pin.name for pin in lock.python}
    missing = []
    for text in package.dependencies:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        name = canonicalize_name(requirement.name)
        if requirement.marker is None and name not in pinned and name not in local:
            missing.append(requirement.name)
    if missing:
        raise SpecError(
            f"{what}: the project depends on {', '.join(missing)}, which envd.lock does not pin",
            file=f"{project_dir}/envd.yaml",
            hint="run `envctl lock`: it locks the project's own dependencies with the rest",
        )


def _read_package(project_dir: str, lock: LockFile, contents: dict[str, bytes]) -> p.ProjectPackage:
    """The project's pyproject.toml as the project step needs it (SpecError naming what)."""
    mode = lock.inputs.project
    where = f"{project_dir}/pyproject.toml"
    text = read_project_file(project_dir, "pyproject.toml")
    if text is None or not p.has_project_table(text):
        setup = _read_setup_package(project_dir, mode, lock.computed)
        if setup is not None:
            return _with_files(project_dir, mode, setup, contents)
    if text is None:
        raise SpecError(
            f"`project: {mode}` installs the project from its pyproject.toml, and there is none",
            file=where,
            hint="add a pyproject.toml with a [project] table (name, version), or remove "
            "`project:` from envd.yaml",
        )
    try:
        package = _parse_pyproject(project_dir, "", text)
    except p.ProjectError as exc:
        raise SpecError(
            str(exc),
            file=where,
            hint="envd reads [project] name, version, dependencies and scripts (PEP 621)",
        ) from None
    return _with_files(project_dir, mode, package, contents)


def _read_setup_package(
    project_dir: str, mode: str, computed: ComputedMetadata
) -> p.ProjectPackage | None:
    """A setuptools project without [project]: its setup.cfg/setup.py metadata, read without
    running setup.py (None when it has neither file). Metadata setup.py computes is the
    lock's, computed at lock in a container (envd.services.setup_container)."""
    setup_py = read_project_file(project_dir, "setup.py")
    setup_cfg = read_project_file(project_dir, "setup.cfg")
    if setup_py is None and setup_cfg is None:
        return None
    where = f"{project_dir}/{'setup.py' if setup_py is not None else 'setup.cfg'}"
    try:
        meta = read_setup(setup_py, setup_cfg)
        if meta.version is None and meta.version_attr is not None:
            version = _attr_version(project_dir, "", meta.version_attr, meta.package_dir)
            if version is None:
                name = meta.version_attr.rsplit(".", 1)[-1]
                raise SpecError(
                    f"`project: {mode}`: the version is `{meta.version_attr}`, and that "
                    "module assigns it no literal string (envd reads the module, never runs it)",
                    file=where,
                    hint=f'assign it literally in the module (`{name} = "1.2.0"`), or write the '
                    "version literally in setup.py or setup.cfg",
                )
            meta = replace(meta, version=version)
        return p.package_from_setup(meta)
    except SetupError as exc:
        if exc.computable and computed.name:
            return _computed_package(mode, computed, where)
        raise SpecError(f"`project: {mode}`: {exc.message}", file=where, hint=exc.hint) from None
    except p.ProjectError as exc:
        raise SpecError(
            f"`project: {mode}`: {exc}",
            file=where,
            hint="write name= and version= literally in setup(...), or in setup.cfg [metadata]",
        ) from None


def _computed_package(mode: str, computed: ComputedMetadata, where: str) -> p.ProjectPackage:
    try:
        return p.package_from_setup(computed.as_setup())
    except p.ProjectError as exc:
        raise SpecError(
            f"`project: {mode}`: {exc} (in the metadata computed at lock)",
            file=where,
            hint="fix setup.py's entry_points, then `envctl lock`",
        ) from None


def _with_files(
    project_dir: str, mode: str, package: p.ProjectPackage, contents: dict[str, bytes]
) -> p.ProjectPackage:
    where = f"{project_dir}/pyproject.toml"
    name = p.import_name(package.name)
    source, entry = find_project_package(project_dir, name)
    if package.source and entry is None:
        source = package.source
    files: list[p.StepFile] = []
    if mode == "install":
        if entry is None:
            raise SpecError(
                f"`project: install` copies the package {name}, which is not in the project: "
                f"looked for src/{name}/, src/{name}.py, {name}/ and {name}.py",
                file=where,
                hint="name the project after its import package, or use `project: editable`",
            )
        read = read_setup_files(project_dir, [entry], what="`project: install`")[entry]
        for relpath, data, executable in read:
            if "/__pycache__/" in f"/{relpath}" or relpath.endswith((".pyc", ".pyo")):
                continue
            digest = hashlib.sha256(data).hexdigest()
            contents[digest] = data
            inside = relpath.removeprefix(f"{source}/") if source else relpath
            files.append(p.StepFile(inside, digest, executable))
    return replace(package, source=source, files=tuple(files))


def reads_project_files(lock: LockFile) -> bool:
    """Whether a build of `lock` depends on project files besides it (setup steps' files,
    the project's own pyproject.toml and package)."""
    return bool(lock.inputs.setup_files or lock.inputs.project or lock.inputs.members)
