"""`envctl init` in a project that already has files: the envd.yaml its author would write.

Pure: `adopt` gets the project's files as a mapping of relative path to text and returns the
envd.yaml text plus notes saying what was taken from where. Files may sit at the root or, as
repo2docker reads them, under binder/ or .binder/ (which then hide the root's copies).
"""

from __future__ import annotations

import json
import posixpath
import re
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envd.errors import SpecError
from envd.model import adopt_builders, plan, reqfiles
from envd.model.pythons import AUTO, buildable_for
from envd.model.reqfiles import Parsed, SetupStep
from envd.model.setupmeta import SetupError, read_setup

# Debian suites envd builds from, and the Python each ships; the default first.
SUITES: tuple[tuple[str, str], ...] = (
    ("bookworm", "3.11"),
    ("trixie", "3.13"),
    ("bullseye", "3.9"),
)
DEFAULT_SUITE = "bookworm"
KEY_ORDER = (
    "version",
    "name",
    "base",
    "python",
    "system",
    "packages",
    "requirements",
    "constraints",
    "indexes",
    "env",
    "setup",
    "ports",
    "gpu",
    "cuda",
    "project",
)
# Files repo2docker looks for in binder/ (or .binder/) instead of the root.
BINDER_FILES = (
    "requirements.txt",
    "environment.yml",
    "environment.yaml",
    "apt.txt",
    "runtime.txt",
    "postBuild",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "start",
    "install.R",
    "REQUIRE",
    "Project.toml",
)
_AUTO_COMMENT = "# no Python found: `envctl lock` picks the newest envd builds that fits the pins"
LOCKS = ("uv.lock", "pylock.toml", "Pipfile.lock")
Where = Callable[[str], str | None]  # a file name -> its path in the project, if there


@dataclass(frozen=True)
class Adopted:
    """The envd.yaml text, the same document as data, and what was taken from where."""

    text: str
    document: Mapping[str, Any]
    notes: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # the project files read


@dataclass
class _Found:
    doc: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # (python as written, the file it came from), exact versions and constraints kept apart
    pythons: list[tuple[str, str]] = field(default_factory=list)
    python_ranges: list[tuple[str, str]] = field(default_factory=list)
    project_lines: list[str] = field(default_factory=list)  # requirements files' `-e .`

    def take(self, parsed: Parsed) -> None:
        for path in parsed.files:
            if path not in self.files:
                self.files.append(path)
        self.notes.extend(parsed.notes)
        self.warnings.extend(parsed.warnings)
        if parsed.python:
            if re.fullmatch(r"\d+", parsed.python):
                self.python_ranges.append((f"=={parsed.python}.*", parsed.source))
            elif re.fullmatch(r"\d+(\.\d+){1,2}", parsed.python):
                self.pythons.append((parsed.python, parsed.source))
            else:
                self.python_ranges.append((parsed.python, parsed.source))

    def extend(self, key: str, items: list[Any] | tuple[Any, ...], source: str, what: str) -> None:
        items = [item for item in items if self.allowed(key, item, source)]
        if not items:
            return
        current = self.doc.setdefault(key, [])
        for item in items:
            if item not in current:
                current.append(item)
        self.notes.append(f"took {what} from {source}")

    def allowed(self, key: str, item: Any, source: str) -> bool:
        """What envd.yaml refuses is left out with a warning instead of written."""
        if key == "packages" and Requirement(item).url:
            self.warnings.append(
                f"{source}: `{item}` is a direct URL reference, which `packages:` refuses; left "
                "out: list it in a requirements file and name that in `requirements:`"
            )
            return False
        if key == "indexes" and urlsplit(item).username:
            self.warnings.append(
                f"{source}: index {urlsplit(item).hostname} carries credentials, which envd.yaml "
                "refuses; left out: give them to uv through its environment (UV_INDEX_...)"
            )
            return False
        return True


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
    ordered = {key: document[key] for key in KEY_ORDER if key in document}
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


def _config_dir(files: Mapping[str, str], root: str) -> str | None:
    dirs = [d for d in ("binder", ".binder") if any(p.startswith(f"{d}/") for p in files)]
    if len(dirs) == 2:
        raise SpecError(
            "both binder/ and .binder/ exist; repo2docker refuses this too",
            file=reqfiles.shown(root, ".binder"),
            hint="keep one of them",
        )
    return dirs[0] if dirs else None


# ---------------------------------------------------------------- sources


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
    lock = next((p for p in (where(name) for name in LOCKS) if p), None)
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
    requirements = where("requirements.txt")
    if requirements and "cog.yaml" in files:
        if requirements not in found.files:
            found.notes.append(f"{requirements} not taken: cog.yaml names its own requirements")
    elif requirements and (conda or lock):
        found.notes.append(
            f"{requirements} not taken: {conda or lock} describes the Python packages"
            + (" (as repo2docker does)" if conda else " with exact pins")
        )
    elif requirements:
        parsed = reqfiles.parse_requirements(requirements, files.get, root=root)
        found.take(parsed)
        included = [p for p in parsed.files if p != requirements]
        also = f" (with {', '.join(included)})" if included else ""
        found.extend("requirements", [requirements], requirements + also, "requirements")
        found.extend("indexes", parsed.indexes, requirements, "indexes")
        _project(found, parsed)
    pipfile = where("Pipfile")
    if pipfile and not lock:
        parsed = reqfiles.parse_pipfile(files[pipfile], pipfile, root=root)
        found.take(parsed)
        found.extend("packages", parsed.requirements, pipfile, "packages")
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
        return where, exc.message.removeprefix(f"{where}: "), exc.hint
    except plan.ProjectError as exc:
        return where, str(exc), "write name= literally in setup(...) or setup.cfg [metadata]"
    return None


def _extras(found: _Found, where: Where, files: Mapping[str, str], root: str) -> None:
    post = where("postBuild")
    if post:
        parsed = reqfiles.parse_postbuild(files[post], post, root=root)
        found.take(parsed)
        _setup(found, parsed.setup, post)
    for name, why in (
        ("start", "envd runs commands with `envctl enter`; a start script is not taken over"),
        ("install.R", "R packages are not supported"),
        ("Project.toml", "Julia projects are not supported"),
    ):
        path = where(name)
        if path:
            found.warnings.append(f"{path}: {why}")


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


# ---------------------------------------------------------------- base and python

_SUITE_PYTHONS = {"bookworm": "3.11.2", "trixie": "3.13.5", "bullseye": "3.9.2"}


def _minor(version: str) -> str | None:
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


def _suites_text() -> str:
    return ", ".join(f"{suite} {python}" for suite, python in _by_python())


def _by_python() -> list[tuple[str, str]]:
    return sorted(SUITES, key=lambda s: tuple(int(x) for x in s[1].split(".")))


def _choose_base(found: _Found, root: str, *, at: int) -> None:
    """Base and python from the versions found; its notes go first (at index `at`)."""
    notes, found.notes = found.notes, []
    try:
        _choose(found, root)
    finally:
        found.notes = notes[:at] + found.notes + notes[at:]


def _choose(found: _Found, root: str) -> None:
    exact = [(v, src) for v, src in found.pythons if _minor(v)]
    for version, source in exact[1:]:
        if _minor(version) != _minor(exact[0][0]):
            found.warnings.append(
                f"{source} asks for Python {version}, {exact[0][1]} for {exact[0][0]}; "
                f"took {exact[0][0]} from {exact[0][1]}"
            )
    ranges = []
    for spec, source in found.python_ranges:
        try:
            ranges.append((SpecifierSet(spec), spec, source))
        except InvalidSpecifier:
            found.warnings.append(f"{source}: Python constraint `{spec}` not understood; ignored")
    if "base" in found.doc:  # an image: its interpreter is checked when locking
        if exact:
            found.doc["python"] = _minor(exact[0][0])
            found.notes.append(f"took python {found.doc['python']} from {exact[0][1]}")
        return
    if exact:
        version, source = exact[0]
        minor = _minor(version)
        suite = next((s for s, p in SUITES if p == minor), None)
        if suite is None:
            raise SpecError(
                f"Python {version} (from {source}) is not the Python of any Debian suite envd "
                f"builds from: {_suites_text()}",
                file=reqfiles.shown(root, source),
                hint=f"write `base: {{image: python:{minor}-slim}}` in envd.yaml, or ask for "
                f"Python {', '.join(p for _, p in _by_python())} in {source}",
            )
        found.doc["base"] = {"debian": suite}
        found.doc["python"] = minor
        patch = (
            f" (asked {version}; {suite} ships {_SUITE_PYTHONS[suite]})" if version != minor else ""
        )
        found.notes.append(f"took python {minor} from {source}: base debian {suite}{patch}")
        for specifier, spec, where in ranges:
            if not specifier.contains(_SUITE_PYTHONS[suite]):
                found.warnings.append(
                    f"{where} requires Python {spec}, but {source} asks for {version}"
                )
        return
    if not ranges:
        return
    for suite, minor in SUITES:
        if all(s.contains(_SUITE_PYTHONS[suite]) for s, _, _ in ranges):
            found.doc["base"] = {"debian": suite}
            found.doc["python"] = minor
            sources = ", ".join(f"{spec} in {where}" for _, spec, where in ranges)
            found.notes.append(f"chose python {minor} (base debian {suite}) for {sources}")
            return
    _, spec, source = ranges[0]
    fits = next(
        (f"3.{m}" for m in range(8, 16) if all(s.contains(f"3.{m}.0") for s, _, _ in ranges)),
        None,
    )
    raise SpecError(
        f"no Debian suite envd builds from has a Python that satisfies `{spec}` ({_suites_text()})",
        file=reqfiles.shown(root, source),
        hint=f"write `base: {{image: python:{fits}-slim}}` in envd.yaml"
        if fits
        else "widen requires-python",
    )


def _python_auto(document: dict[str, Any], notes: list[str]) -> None:
    """No base and no Python found: `python: auto`, which `envctl lock` settles (a named
    Python with no base keeps the default suite, as before)."""
    if "base" in document:
        return
    if "python" not in document:
        document["python"] = AUTO
        notes.append(
            "no Python version found: python auto (`envctl lock` picks the newest Python envd "
            "can build that every pin has wheels for)"
        )
        return
    buildable = buildable_for(str(document["python"]))
    suite = buildable.suite if buildable else DEFAULT_SUITE
    document["base"] = {"debian": suite}
    why = f"the suite of Python {document['python']}" if buildable else "the default"
    notes.append(f"no base found: base debian {suite}, {why}")


# ---------------------------------------------------------------- merge and render


def _merge(template: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
    """Template keys overridden by the project's; lists merged without duplicates."""
    out: dict[str, Any] = json.loads(json.dumps(dict(template)))
    if "base" in project and "python" not in project:
        out.pop("python", None)
    for key, value in project.items():
        old = out.get(key)
        if isinstance(value, list):
            if isinstance(old, str):
                old = [old]
            merged = list(old) if isinstance(old, list) else []
            merged.extend(v for v in value if v not in merged)
            out[key] = merged
        elif isinstance(value, dict) and isinstance(old, dict) and key != "base":
            out[key] = {**old, **value}
        else:
            out[key] = value
    for key in ("requirements", "constraints"):
        if isinstance(out.get(key), list) and len(out[key]) == 1:
            out[key] = out[key][0]
    return out


def _plain(text: str) -> bool:
    if not text or text != text.strip() or "\n" in text:
        return False
    try:
        return bool(
            yaml.safe_load(f"k: {text}") == {"k": text} and yaml.safe_load(f"- {text}") == [text]
        )
    except yaml.YAMLError:
        return False


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return text if _plain(text) else json.dumps(text)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list):
                lines.append(f"{pad}{_scalar(key)}:")
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{pad}{_scalar(key)}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list):
                inner = _block(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [f"{pad}{_scalar(value)}"]


def render(document: Mapping[str, Any], files: list[str] | tuple[str, ...] = ()) -> str:
    """envd.yaml text for the document, keys in the order given, with a header comment."""
    head = "# Written by `envctl init`" + (f" from {', '.join(files)}." if files else ".")
    lines = textwrap.wrap(
        head, width=98, subsequent_indent="#   ", break_on_hyphens=False, break_long_words=False
    )
    for key, value in document.items():
        if isinstance(value, dict | list):
            if not value:
                continue
            lines.append(f"{key}:")
            lines.extend(_block(value, 2))
        elif key == "python" and value == AUTO:
            lines.append(f"{key}: {AUTO}  {_AUTO_COMMENT}")
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"
