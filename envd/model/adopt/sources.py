"""What `adopt` takes from each kind of file: cog.yaml, runtime.txt, apt.txt, the Python
package files (environment.yml, the locks, requirements.txt, Pipfile, pyproject.toml,
setup.py), postBuild and start, devcontainer.json; and whether envd can install the project.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from packaging.requirements import Requirement

from envd.errors import SpecError
from envd.model import adopt_builders, plan, reqfiles
from envd.model.adopt.found import LOCKS, Where, _Found
from envd.model.reqfiles import Parsed, SetupStep
from envd.model.setupmeta import SetupError, read_setup


def _config_dir(files: Mapping[str, str], root: str) -> str | None:
    dirs = [d for d in ("binder", ".binder") if any(p.startswith(f"{d}/") for p in files)]
    if len(dirs) == 2:
        raise SpecError(
            "both binder/ and .binder/ exist; repo2docker refuses this too",
            file=reqfiles.shown(root, ".binder"),
            hint="keep one of them",
        )
    return dirs[0] if dirs else None


def _cog(found: _Found, files: Mapping[str, str], root: str) -> None:
    text = files.get("cog.yaml")
    if text is None:
        return
    parsed = reqfiles.parse_cog(text, files.get, root=root)
    found.take(parsed)
    found.extend("system", parsed.system, "cog.yaml", "system packages")
    found.extend("packages", parsed.requirements, "cog.yaml", "packages (python_packages)")
    found.extend(
        "requirements", parsed.requirement_files, "cog.yaml", "requirements (python_requirements)"
    )
    _project(found, parsed)
    _setup(found, parsed.setup, "cog.yaml")
    adopt_builders.take_gpu_env(found, parsed, "cog.yaml", "gpu: true")


def _project(found: _Found, parsed: Parsed, *, installable_means: str = "install") -> None:
    for member in parsed.members:
        found.notes.append(
            f"{parsed.source}: the local package `{member}` is installed editable from the "
            "project's files"
        )
    mode = parsed.project
    if mode == "install":
        mode = installable_means
    if mode is None:
        return
    if found.doc.get("project") == "editable" and mode == "install":
        return
    if parsed.format == "requirements":
        found.project_lines.append(parsed.source)
    if found.doc.get("project") != mode:
        found.doc["project"] = mode
        found.notes.append(f"took project: {mode} from {parsed.source}")


def _setup(found: _Found, steps: tuple[SetupStep, ...], source: str) -> None:
    entries: list[Any] = [
        {"run": s.run, "files": list(s.files)} if s.files else s.run for s in steps
    ]
    found.extend("setup", entries, source, "setup steps")


def _python_files(found: _Found, where: Where, files: Mapping[str, str], root: str) -> None:
    runtime = where("runtime.txt")
    if runtime:
        parsed = reqfiles.parse_runtime_txt(files[runtime], runtime, root=root)
        found.take(parsed)
    if ".python-version" in files:
        parsed = reqfiles.parse_python_version(
            files[".python-version"], ".python-version", root=root
        )
        found.take(parsed)


def _system(found: _Found, where: Where, files: Mapping[str, str], root: str) -> None:
    apt = where("apt.txt")
    if apt:
        parsed = reqfiles.parse_apt_txt(files[apt], apt, root=root)
        found.take(parsed)
        found.extend("system", parsed.system, apt, "system packages")


def _python_packages(found: _Found, where: Where, files: Mapping[str, str], root: str) -> None:
    conda = where("environment.yml") or where("environment.yaml")
    if conda:
        parsed = reqfiles.parse_environment_yml(files[conda], conda, root=root, read=files.get)
        found.take(parsed)
        found.extend("packages", parsed.requirements, conda, "packages")
        found.extend("requirements", parsed.requirement_files, conda, "requirements (pip: -r)")
        found.extend("indexes", parsed.indexes, conda, "indexes")
        _project(found, parsed, installable_means="install")
    # repo2docker: environment.yml wins over a Pipfile (its conda build pack comes first)
    pipenv = [p for p in (where("Pipfile.lock"), where("Pipfile")) if p]
    if conda and pipenv:
        found.notes.append(
            f"{' and '.join(pipenv)} not taken: {conda} describes the Python packages "
            "(as repo2docker does)"
        )
    locks = [name for name in LOCKS if not (conda and name == "Pipfile.lock")]
    lock = next((p for p in (where(name) for name in locks) if p), None)
    if lock:
        parser = {
            "uv.lock": reqfiles.parse_uv_lock,
            "pylock.toml": reqfiles.parse_pylock,
            "Pipfile.lock": reqfiles.parse_pipfile_lock,
        }[posixpath.basename(lock)]
        parsed = parser(files[lock], lock, root=root)
        found.take(parsed)
        found.extend(
            "requirements", [lock], lock, f"requirements ({_count(len(parsed.pins), 'exact pin')})"
        )
        found.extend("indexes", parsed.indexes, lock, "indexes")
        _project(found, parsed)
        if posixpath.basename(lock) == "Pipfile.lock":
            _pipfile_develop(found, files[lock], lock, parsed, root)
    pipfile = None if conda else where("Pipfile")
    requirements = where("requirements.txt")
    if requirements and "cog.yaml" in files:
        if requirements not in found.files:
            found.notes.append(f"{requirements} not taken: cog.yaml names its own requirements")
    elif requirements and (conda or lock or pipfile):
        found.notes.append(
            f"{requirements} not taken: {conda or lock or pipfile} describes the Python packages"
            + (" (as repo2docker does)" if conda or pipfile else " with exact pins")
        )
    elif requirements:
        parsed = reqfiles.parse_requirements(requirements, files.get, root=root)
        found.take(parsed)
        included = [p for p in parsed.files if p != requirements]
        also = f" (with {', '.join(included)})" if included else ""
        found.extend("requirements", [requirements], requirements + also, "requirements")
        found.extend("indexes", parsed.indexes, requirements, "indexes")
        _project(found, parsed)
    plain = (
        reqfiles.parse_pipfile(files[pipfile], pipfile, root=root) if pipfile and not lock else None
    )
    # `requirements: Pipfile` refuses git and URL entries (envd.yaml takes those as packages:)
    direct = plain is not None and any(" @ " in r for r in plain.requirements)
    if pipfile and plain is not None and plain.members and not direct:
        # local packages in subfolders: `requirements: Pipfile` installs them (editable, from
        # the project's files) and locks their own dependencies with the rest
        parsed = reqfiles.parse_pipfile(files[pipfile], pipfile, root=root)
        both = reqfiles.parse_pipfile(files[pipfile], pipfile, root=root, dev=True)
        found.take(both)
        found.extend("requirements", [pipfile], pipfile, "requirements")
        dev = both.requirements[len(parsed.requirements) :]
        found.extend("packages", dev, pipfile, "packages ([dev-packages])")
        if tomllib.loads(files[pipfile]).get("dev-packages"):
            found.notes.append(f"{pipfile}: [dev-packages] {_DEV_TOO}")
        found.extend("indexes", parsed.indexes, pipfile, "indexes")
        _project(found, parsed)
    elif pipfile and not lock:
        parsed = reqfiles.parse_pipfile(files[pipfile], pipfile, root=root, dev=True)
        if parsed.members:  # beside git or URL entries: left out (the parser says installed)
            found.warnings.append(
                f"{pipfile}: the local packages {', '.join(parsed.members)} left out: beside "
                "git or URL entries they need a Pipfile.lock (`pipenv lock`), which envd installs"
            )
            kept = tuple(n for n in parsed.notes if "editable" not in n)
            parsed = replace(parsed, members=(), notes=kept)
        found.take(parsed)
        found.extend("packages", parsed.requirements, pipfile, "packages")
        if tomllib.loads(files[pipfile]).get("dev-packages"):
            found.notes.append(f"{pipfile}: [dev-packages] {_DEV_TOO}")
        found.extend("indexes", parsed.indexes, pipfile, "indexes")
        _project(found, parsed)
    elif pipfile:
        found.notes.append(f"{pipfile} not taken: {lock} has its exact pins")
    if "pyproject.toml" in files:
        _pyproject(found, files["pyproject.toml"], root, covered=bool(lock or conda))
    elif where("setup.py") or "setup.cfg" in files:
        found.doc.setdefault("project", "editable")
        found.files.append(where("setup.py") or "setup.cfg")
        found.notes.append(f"took project: editable from {where('setup.py') or 'setup.cfg'}")
    if "constraints.txt" in files:
        parsed = reqfiles.parse_constraints("constraints.txt", files.get, root=root)
        found.take(parsed)
        found.extend("constraints", parsed.constraints, "constraints.txt", "constraints")


_DEV_TOO = "included, as repo2docker installs them (`pipenv install --dev`)"


def _pipfile_develop(found: _Found, text: str, lock: str, default: Parsed, root: str) -> None:
    """Pipfile.lock's `develop` pins, as `packages:` (`requirements:` reads its `default`)."""
    both = reqfiles.parse_pipfile_lock(text, lock, root=root, dev=True)
    taken = {Requirement(r).name for r in default.requirements}
    develop = both.requirements[len(default.requirements) :]
    develop = tuple(r for r in develop if Requirement(r).name not in taken)
    if develop:
        pins = _count(len(develop), "exact pin")
        found.extend("packages", develop, lock, f"packages (develop, {pins})")
        found.notes.append(f"{lock}: develop {_DEV_TOO}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _pyproject(found: _Found, text: str, root: str, *, covered: bool) -> None:
    parsed = reqfiles.parse_pyproject(text, "pyproject.toml", root=root)
    found.take(parsed)
    if parsed.project:
        _project(found, parsed, installable_means="editable")
        if parsed.requirements:
            deps = _count(len(parsed.requirements), "dependency", "dependencies")
            found.notes.append(
                f"pyproject.toml's {deps} come with the project (`envctl lock` pins them)"
            )
    elif parsed.requirements and not covered:
        found.extend("packages", parsed.requirements, "pyproject.toml", "packages")
    groups = tomllib.loads(text).get("dependency-groups")
    if not covered and isinstance(groups, dict) and "dev" in groups:
        dev = reqfiles.parse_pyproject(text, "pyproject.toml", root=root, groups=("dev",))
        found.extend(
            "packages",
            dev.requirements[len(parsed.requirements) :],
            "pyproject.toml",
            "the `dev` dependency group (uv installs it by default)",
        )


def _check_project(found: _Found, files: Mapping[str, str], root: str) -> None:
    """`project:` is written only when envd can install the project: its metadata read
    statically (pyproject.toml [project], else setup.cfg / literal setup.py), as the build
    and the lock read it; otherwise it is left out, saying why and what to write."""
    mode = found.doc.get("project")
    if mode is None:
        return
    problem = project_problem(files)
    if problem is None and computed_setup(files):
        found.notes.append(
            "setup.py computes its metadata when it runs: `envctl lock` runs the PEP 517 "
            "legacy backend in a throwaway container of the base image to get it (never on "
            "this machine)"
        )
    if problem is not None:
        where, message, hint = problem
        if found.project_lines:  # `-e .` there needs `project:`: refused, not half-written
            raise SpecError(
                f"{found.project_lines[0]} installs the project itself (`-e .`), and envd "
                f"cannot: {message}",
                file=reqfiles.shown(root, where),
                hint=hint,
            )
        del found.doc["project"]
        found.warnings.append(
            f"{reqfiles.shown(root, where)}: {message}; `project: {mode}` left out ({hint})"
        )


def computed_setup(files: Mapping[str, str]) -> bool:
    """Whether the project's setuptools metadata is computed when setup.py runs."""
    text = files.get("pyproject.toml")
    if text is not None and plan.has_project_table(text):
        return False
    setup_py, setup_cfg = files.get("setup.py"), files.get("setup.cfg")
    if setup_py is None and setup_cfg is None:
        return False
    try:
        read_setup(setup_py, setup_cfg)
    except SetupError as exc:
        return exc.computable
    return False


def project_problem(files: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Why envd cannot install this project itself, as (file, message, fix), or None."""
    text = files.get("pyproject.toml")
    if text is not None and plan.has_project_table(text):
        try:
            plan.read_pyproject(text)
        except plan.ProjectError as exc:
            return (
                "pyproject.toml",
                str(exc).removeprefix("pyproject.toml: "),
                "give [project] a static name and version",
            )
        return None
    setup_py, setup_cfg = files.get("setup.py"), files.get("setup.cfg")
    if setup_py is None and setup_cfg is None:
        where = "pyproject.toml" if text is not None else "setup.py"
        return (
            where,
            "no [project] table, setup.py or setup.cfg to install from",
            "add a [project] table with name and version",
        )
    where = "setup.py" if setup_py is not None else "setup.cfg"
    try:
        plan.package_from_setup(read_setup(setup_py, setup_cfg))
    except SetupError as exc:
        if exc.computable:
            return None  # computed at lock by the legacy backend, in a throwaway container
        return where, exc.message.removeprefix(f"{where}: "), exc.hint
    except plan.ProjectError as exc:
        return where, str(exc), "write name= literally in setup(...) or setup.cfg [metadata]"
    return None


def _extras(found: _Found, where: Where, files: Mapping[str, str], root: str) -> None:
    post = where("postBuild")
    if post:
        parsed = reqfiles.parse_postbuild(files[post], post, root=root)
        found.take(parsed)
        _node(found, files[post], post)
        _setup(found, parsed.setup, post)
    start = where("start")
    if start:
        found.doc["start"] = start
        found.files.append(start)
        found.notes.append(
            f"took start: {start}: every command runs through it (`{start} CMD...`), "
            "as repo2docker's entrypoint does"
        )
    for name, why in (
        ("install.R", "R packages are not supported"),
        ("Project.toml", "Julia projects are not supported"),
    ):
        path = where(name)
        if path:
            found.warnings.append(f"{path}: {why}")


# A postBuild line that runs Node.js (repo2docker's base image has it; envd's has not).
_NODE_COMMAND = re.compile(
    r"(?:^|[;&|(`]|\b(?:then|do|exec|sudo|time))\s*(node|npm|npx)(?=\s|$|[;&|)`])"
)


def _node(found: _Found, text: str, path: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        match = _NODE_COMMAND.search(line.split("#", 1)[0].strip())
        if not match:
            continue
        system = found.doc.setdefault("system", [])
        system.extend(p for p in ("nodejs", "npm") if p not in system)
        found.notes.append(
            f"took system packages nodejs, npm for {path}:{number} (`{line.strip()}`): "
            f"it runs {match.group(1)}, which repo2docker's base image has"
        )
        return


def _devcontainer(found: _Found, files: Mapping[str, str], root: str) -> None:
    path = next(
        (p for p in (".devcontainer/devcontainer.json", ".devcontainer.json") if p in files), None
    )
    if path is None:
        return
    parsed = reqfiles.parse_devcontainer(files[path], path, root=root)
    found.take(parsed)
    if parsed.image:
        found.doc["base"] = {"image": parsed.image}
        found.notes.append(f"took base image {parsed.image} from {path}")
    if parsed.env:
        env = found.doc.setdefault("env", {})
        env.update(dict(parsed.env))
        found.notes.append(f"took env from {path}")
    found.extend("ports", parsed.ports, path, "ports")
    _setup(found, parsed.setup, path)
