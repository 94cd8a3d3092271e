"""Requirement files in every common format, read into one typed result (pure: no file I/O).

Each parser gets the file's text (or, where a format includes other files, a `read` callable
that maps a relative path to its text or None) and returns a `Parsed`. Errors are SpecErrors
naming the file (joined with the `root` passed in), the line where known, and a fix.
"""

from __future__ import annotations

import functools
import inspect
import json
import posixpath
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from envd.errors import SpecError

Read = Callable[[str], str | None]
_P = ParamSpec("_P")

_BOM = "\ufeff"  # a UTF-8 byte order mark, as some editors write
PYPI_INDEXES = ("https://pypi.org/simple", "https://pypi.python.org/simple")


@dataclass(frozen=True)
class Pin:
    """One exact package: a version from an index, or a direct URL; sha256 digests (hex)."""

    name: str
    version: str | None = None
    sha256: tuple[str, ...] = ()
    url: str | None = None
    marker: str | None = None


@dataclass(frozen=True)
class SetupStep:
    """A command run after packages; `files` are the project files it needs (and is keyed on)."""

    run: str
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parsed:
    """What one file (with the files it includes) says about the environment."""

    source: str  # relative path as given
    format: str  # "requirements", "pyproject", "uv.lock", ...
    requirements: tuple[str, ...] = ()  # PEP 508 strings, normalised
    pins: tuple[Pin, ...] = ()
    constraints: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()  # index URLs other than PyPI, in order
    python: str | None = None  # "3.11", "3.11.7", "3" or a specifier such as ">=3.10"
    project: str | None = None  # "editable" or "install" when the file installs the project itself
    project_name: str | None = None
    system: tuple[str, ...] = ()  # Debian packages
    setup: tuple[SetupStep, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[int, ...] = ()
    image: str | None = None
    gpu: bool = False
    cuda: str | None = None
    files: tuple[str, ...] = ()  # every file read, in order (the source first)
    requirement_files: tuple[str, ...] = ()  # requirements files it names (checked, not merged)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Where each of `requirements`, `constraints` (and the project line) was written:
    # (relative path, line), in the same order; filled by the pip requirements reader.
    requirement_lines: tuple[tuple[str, int], ...] = ()
    constraint_lines: tuple[tuple[str, int], ...] = ()
    project_line: tuple[str, int] | None = None
    # uv.lock: what the project at "." depends on (with the lock's markers and extras, pinned
    # to the locked version), its `dev` group included as uv installs it; () when unknown.
    direct: tuple[str, ...] = ()


@dataclass
class _Acc:
    """A Parsed under construction."""

    source: str
    format: str
    requirements: list[str] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    python: str | None = None
    project: str | None = None
    project_name: str | None = None
    system: list[str] = field(default_factory=list)
    setup: list[SetupStep] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    image: str | None = None
    gpu: bool = False
    cuda: str | None = None
    files: list[str] = field(default_factory=list)
    requirement_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    requirement_lines: list[tuple[str, int]] = field(default_factory=list)
    constraint_lines: list[tuple[str, int]] = field(default_factory=list)
    project_line: tuple[str, int] | None = None
    direct: list[str] = field(default_factory=list)

    def index(self, url: str) -> None:
        url = url.rstrip("/")
        if url not in PYPI_INDEXES and url not in self.indexes:
            self.indexes.append(url)

    def freeze(self) -> Parsed:
        return Parsed(
            source=self.source,
            format=self.format,
            requirements=tuple(self.requirements),
            pins=tuple(self.pins),
            constraints=tuple(self.constraints),
            indexes=tuple(self.indexes),
            python=self.python,
            project=self.project,
            project_name=self.project_name,
            system=tuple(self.system),
            setup=tuple(self.setup),
            env=tuple(self.env),
            ports=tuple(self.ports),
            image=self.image,
            gpu=self.gpu,
            cuda=self.cuda,
            files=tuple(self.files) or (self.source,),
            requirement_files=tuple(self.requirement_files),
            notes=tuple(self.notes),
            warnings=tuple(self.warnings),
            requirement_lines=tuple(self.requirement_lines),
            constraint_lines=tuple(self.constraint_lines),
            project_line=self.project_line,
            direct=tuple(self.direct),
        )


def shown(root: str, path: str) -> str:
    """The path as an error shows it: joined with the root the caller passed."""
    return posixpath.join(root, path) if root else path


def _error(
    root: str, path: str, message: str, line: int | None = None, hint: str | None = None
) -> SpecError:
    return SpecError(message, file=shown(root, path), line=line, hint=hint)


def _requirement(text: str, root: str, path: str, line: int | None, hint: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise _error(
            root, path, f"`{text}` is not a valid requirement: {exc}", line, hint
        ) from None


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def _pin_of(req: Requirement, sha256: tuple[str, ...] = ()) -> Pin | None:
    """A Pin when the requirement names one exact version or a URL."""
    marker = str(req.marker) if req.marker else None
    name = canonicalize_name(req.name)
    if req.url:
        digests = tuple(re.findall(r"sha256=([0-9a-fA-F]{64})", req.url))
        return Pin(name=name, url=req.url, sha256=sha256 or digests, marker=marker)
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return Pin(name=name, version=specs[0].version, sha256=sha256, marker=marker)
    return None


def _checked(parse: Callable[_P, Parsed]) -> Callable[_P, Parsed]:
    """A value of the wrong type deep in a file is a SpecError naming the file, not a crash."""
    signature = inspect.signature(parse)

    @functools.wraps(parse)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Parsed:
        try:
            return parse(*args, **kwargs)
        except (AttributeError, KeyError, TypeError, ValueError, RecursionError) as exc:
            # ValueError: a name or version in the file that packaging refuses
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if isinstance(exc, RecursionError):
                what = "values nested too deeply"
            elif isinstance(exc, KeyError):
                what = f"a missing key ({exc})"
            elif isinstance(exc, ValueError):
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                what = f"a value that is not valid ({first})"
            else:
                what = f"a value of the wrong type ({exc})"
            raise _error(
                str(bound.arguments["root"]),
                str(bound.arguments["path"]),
                f"unexpected content: {what}",
                None,
                "compare it with what its tool writes; regenerate it if it was edited by hand",
            ) from None

    return wrapper


# ---------------------------------------------------------------- pip requirements files

_COMMENT = re.compile(r"(^|\s+)#.*$")
_ENV_VAR = re.compile(r"\$\{[A-Z0-9_]+\}")
_EGG = re.compile(r"#(?:.*&)?egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_WHEEL = re.compile(r"([A-Za-z0-9_.]+)-([0-9][^-]*)-[^-]+-[^-]+-[^-]+\.whl$")
_URL_START = re.compile(r"^(https?|file|git\+[a-z]+|hg\+[a-z]+|svn\+[a-z]+|bzr\+[a-z]+)://")

# option name -> (takes a value, the option's canonical name)
_OPTIONS = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
    "-e": "editable",
    "--editable": "editable",
    "-i": "index-url",
    "--index-url": "index-url",
    "--extra-index-url": "extra-index-url",
    "-f": "find-links",
    "--find-links": "find-links",
    "--no-index": "no-index",
    "--pre": "pre",
    "--prefer-binary": "prefer-binary",
    "--require-hashes": "require-hashes",
    "--only-binary": "only-binary",
    "--no-binary": "no-binary",
    "--trusted-host": "trusted-host",
    "--use-feature": "use-feature",
    "--hash": "hash",
    "--config-settings": "config-settings",
    "--global-option": "global-option",
    "--install-option": "install-option",
}
_FLAGS = {"no-index", "pre", "prefer-binary", "require-hashes"}
_PER_LINE = {"hash", "config-settings", "global-option", "install-option"}


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines joined at trailing backslashes, numbered by their first physical line (as pip)."""
    start: int | None = None
    parts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.endswith("\\") or _COMMENT.match(line):
            if _COMMENT.match(line):
                line = " " + line  # a comment ends a continuation and stays a comment
            if parts:
                parts.append(line)
                yield start or number, "".join(parts)
                parts = []
            else:
                yield number, line
        else:
            if not parts:
                start = number
            parts.append(line.strip("\\"))
    if parts:
        yield start or 1, "".join(parts)


def _options(
    tokens: list[str], report: Callable[[str, str | None], SpecError]
) -> list[tuple[str, str]]:
    """(canonical option, value) pairs; `--opt=value`, `--opt value`, `-rvalue`."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name, eq, value = token.partition("=") if token.startswith("--") else (token, "", "")
        if not token.startswith("--") and len(token) > 2 and token[:2] in _OPTIONS:
            name, value, eq = token[:2], token[2:], "="
        option = _OPTIONS.get(name)
        if option is None:
            raise report(
                f"unknown option `{name}`",
                "pip's requirement file options: -r, -c, -e, -i, --extra-index-url, --hash",
            )
        if option in _FLAGS:
            out.append((option, ""))
        elif eq:
            out.append((option, value))
        else:
            if i + 1 >= len(tokens):
                raise report(f"`{name}` needs a value", None)
            i += 1
            out.append((option, tokens[i]))
        i += 1
    return out


MAX_INCLUDE_DEPTH = 32  # -r/-c chains: pip has no bound; a deeper one is a loop through a link
MAX_INCLUDE_READS = 256  # files read for one top file, includes included


class _RequirementsReader:
    def __init__(self, read: Read, root: str, acc: _Acc) -> None:
        self.read = read
        self.root = root
        self.acc = acc
        self.stack: list[str] = []
        self.reads = 0

    def file(self, path: str, *, constraint: bool, via: tuple[str, int] | None) -> None:
        if via is not None and (
            len(self.stack) >= MAX_INCLUDE_DEPTH or self.reads >= MAX_INCLUDE_READS
        ):  # distinct paths can still loop: `-r sub/r.txt` with a link sub -> .
            raise _error(
                self.root,
                via[0],
                f"includes nested deeper than {MAX_INCLUDE_DEPTH} files, or more than "
                f"{MAX_INCLUDE_READS} reads of included files",
                via[1],
                "include each file once, from the top file (a symlinked folder may loop)",
            )
        self.reads += 1
        if path in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(path) :], path])
            assert via is not None
            raise _error(
                self.root,
                via[0],
                f"include cycle: {cycle}",
                via[1],
                f"remove the `-r`/`-c` line that includes {path} again",
            )
        text = self.read(path)
        if text is None:
            if via is None:
                raise _error(self.root, path, "file not found")
            raise _error(
                self.root,
                via[0],
                f"included file `{path}` does not exist ({shown(self.root, path)})",
                via[1],
                "paths in -r/-c lines are relative to the file that holds them",
            )
        if path not in self.acc.files:
            self.acc.files.append(path)
        self.stack.append(path)
        for number, raw in _logical_lines(text.removeprefix(_BOM)):
            self.line(path, number, raw, constraint)
        self.stack.pop()

    def line(self, path: str, number: int, raw: str, constraint: bool) -> None:
        line = _COMMENT.sub("", raw).strip()
        if not line:
            return
        if _ENV_VAR.search(line):
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: {', '.join(_ENV_VAR.findall(line))} "
                "left as is (pip would substitute the environment variable)"
            )

        def report(message: str, hint: str | None) -> SpecError:
            return _error(self.root, path, message, number, hint)

        tokens = line.split(" ")
        args: list[str] = []
        for token in tokens:
            if token.startswith("-"):
                break
            args.append(token)
        rest = " ".join(tokens[len(args) :])
        try:
            option_tokens = shlex.split(rest)
        except ValueError as exc:
            raise report(f"cannot split options: {exc}", "check quotes on this line") from None
        options = _options(option_tokens, report)
        spec = " ".join(args).strip()
        if spec:
            bad = [name for name, _ in options if name not in _PER_LINE]
            if bad:
                raise report(
                    f"`--{bad[0]}` must be on a line of its own",
                    "put global options such as --index-url on their own line",
                )
            self.requirement(path, number, spec, [v for n, v in options if n == "hash"], constraint)
            return
        for option, value in options:
            self.option(path, number, option, value, constraint, report)

    def option(
        self,
        path: str,
        number: int,
        option: str,
        value: str,
        constraint: bool,
        report: Callable[[str, str | None], SpecError],
    ) -> None:
        here = posixpath.dirname(path)
        if option in ("requirement", "constraint"):
            target = posixpath.normpath(posixpath.join(here, value))
            self.file(target, constraint=constraint or option == "constraint", via=(path, number))
        elif option == "editable":
            self.editable(path, number, value, report)
        elif option in ("index-url", "extra-index-url"):
            if not re.match(r"^https?://", value):
                raise report(f"`{value}` is not an http(s) index URL", None)
            self.acc.index(value)
        elif option == "find-links":
            raise report(
                f"`--find-links {value}` is not supported: envd installs from package indexes only",
                "publish the files on an index and use `--extra-index-url`, or name them "
                "directly as `name @ https://...#sha256=...`",
            )
        elif option == "no-index":
            raise report(
                "`--no-index` is not supported: envd resolves from package indexes",
                "remove it, and list extra indexes with `--extra-index-url`",
            )
        elif option in _PER_LINE:
            raise report(f"`--{option}` must follow a requirement on the same line", None)
        else:
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: `--{option}` ignored (envd decides this)"
            )

    def editable(
        self, path: str, number: int, value: str, report: Callable[[str, str | None], SpecError]
    ) -> None:
        if _URL_START.match(value):
            egg = _EGG.search(value)
            if not egg:
                raise report(
                    f"editable URL `{value}` has no `#egg=NAME`",
                    f"write `NAME @ {value}` instead",
                )
            url = value[: egg.start()].rstrip("#&")
            self.acc.requirements.append(str(Requirement(f"{egg.group(1)} @ {url}")))
            self.acc.requirement_lines.append((path, number))
            self.acc.warnings.append(
                f"{shown(self.root, path)}:{number}: `-e {value}` installed as a plain "
                f"(non-editable) package"
            )
            return
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), value))
        if target == ".":
            self.acc.project = "editable"
            self.acc.project_line = self.acc.project_line or (path, number)
            self.acc.notes.append(
                f"{shown(self.root, path)}:{number}: `-e {value}` is the project itself (editable)"
            )
        else:
            raise report(
                f"`-e {value}` installs another local directory ({target}); envd installs only "
                "the project itself as editable",
                f"depend on it as `NAME @ file:///workspace/{target}`, or make it its own project",
            )

    def requirement(
        self, path: str, number: int, spec: str, hashes: list[str], constraint: bool
    ) -> None:
        if spec in (".", "./") or spec.startswith(("./", "../", "/")) or spec == "..":
            target = posixpath.normpath(posixpath.join(posixpath.dirname(path), spec))
            if target == ".":
                self.acc.project = self.acc.project or "install"
                self.acc.project_line = self.acc.project_line or (path, number)
                self.acc.notes.append(
                    f"{shown(self.root, path)}:{number}: `{spec}` is the project itself"
                )
                return
            raise _error(
                self.root,
                path,
                f"`{spec}` is a local path other than the project",
                number,
                f"write `NAME @ file:///workspace/{target}`",
            )
        if _URL_START.match(spec):
            egg = _EGG.search(spec)
            wheel = _WHEEL.search(spec.split("#", 1)[0])
            if egg:
                spec = f"{egg.group(1)} @ {spec}"
            elif wheel:
                spec = f"{wheel.group(1)} @ {spec}"
            else:
                raise _error(
                    self.root,
                    path,
                    f"`{spec}` is a URL without a package name",
                    number,
                    f"write `NAME @ {spec}`",
                )
        req = _requirement(
            spec, self.root, path, number, "PEP 508, e.g. `numpy>=1.26` or `name @ https://...`"
        )
        digests: list[str] = []
        for value in hashes:
            algorithm, _, digest = value.partition(":")
            if algorithm != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise _error(
                    self.root,
                    path,
                    f"`--hash={value}` is not a sha256 digest",
                    number,
                    "write `--hash=sha256:<64 hex digits>` (pip-compile --generate-hashes does)",
                )
            digests.append(digest.lower())
        text = str(req)
        if constraint:
            if req.url is None and not req.specifier and not req.marker:
                self.acc.warnings.append(
                    f"{shown(self.root, path)}:{number}: constraint `{text}` constrains nothing"
                )
            self.acc.constraints.append(text)
            self.acc.constraint_lines.append((path, number))
            return
        pin = _pin_of(req, tuple(digests))
        if digests and (pin is None or (pin.version is None and pin.url is None)):
            raise _error(
                self.root,
                path,
                f"`{text}` has hashes but no exact version",
                number,
                f"pin it: `{req.name}==VERSION --hash=...`",
            )
        self.acc.requirements.append(text)
        self.acc.requirement_lines.append((path, number))
        if pin is not None:
            self.acc.pins.append(pin)


def parse_requirements(path: str, read: Read, *, root: str = "") -> Parsed:
    """A pip requirements file as pip reads it, with -r/-c includes relative to each file."""
    acc = _Acc(source=path, format="requirements")
    _RequirementsReader(read, root, acc).file(path, constraint=False, via=None)
    return acc.freeze()


def parse_constraints(path: str, read: Read, *, root: str = "") -> Parsed:
    """A pip constraints file (every requirement line is a constraint)."""
    acc = _Acc(source=path, format="constraints")
    _RequirementsReader(read, root, acc).file(path, constraint=True, via=None)
    return acc.freeze()


# ---------------------------------------------------------------- TOML formats


def _toml(text: str, path: str, root: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text.removeprefix(_BOM))
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else max(1, len(text.splitlines()))
        raise _error(
            root,
            path,
            f"TOML syntax error: {str(exc).split(' (at')[0]}",
            line,
            "check quotes, brackets and `key = value` lines",
        ) from None


def _table(value: object, path: str, root: str, key: str, text: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(root, path, f"`{key}` must be a table", _line_of(text, key.split(".")[-1]))
    return value


def _string_list(value: object, path: str, root: str, key: str, text: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error(
            root, path, f"`{key}` must be a list of strings", _line_of(text, key.split(".")[-1])
        )
    return list(value)


def _add_requirements(acc: _Acc, items: list[str], path: str, root: str, text: str) -> None:
    for item in items:
        req = _requirement(item, root, path, _line_of(text, item), "PEP 508, e.g. `numpy>=1.26`")
        acc.requirements.append(str(req))
        pin = _pin_of(req)
        if pin is not None:
            acc.pins.append(pin)


@_checked
def parse_pyproject(
    text: str,
    path: str = "pyproject.toml",
    *,
    root: str = "",
    extras: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
) -> Parsed:
    """PEP 621 [project], PEP 735 [dependency-groups]; poetry's table best-effort."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="pyproject")
    project = _table(data.get("project"), path, root, "project", text)
    if "build-system" in data or project:
        acc.project_name = project.get("name") if isinstance(project.get("name"), str) else None
    if "build-system" in data:
        acc.project = "install"
    if project:
        if "dependencies" in (project.get("dynamic") or []):
            acc.warnings.append(
                f"{shown(root, path)}: dependencies are dynamic (computed by the build backend); "
                "they come with the project when it is installed"
            )
        _add_requirements(
            acc,
            _string_list(project.get("dependencies"), path, root, "project.dependencies", text),
            path,
            root,
            text,
        )
        optional = _table(
            project.get("optional-dependencies"), path, root, "optional-dependencies", text
        )
        for extra in extras:
            if extra not in optional:
                raise _error(
                    root,
                    path,
                    f"no extra `{extra}` in [project.optional-dependencies]",
                    _line_of(text, "optional-dependencies"),
                    f"extras defined: {', '.join(sorted(optional)) or 'none'}",
                )
            key = f"project.optional-dependencies.{extra}"
            _add_requirements(
                acc, _string_list(optional[extra], path, root, key, text), path, root, text
            )
        if isinstance(project.get("requires-python"), str):
            acc.python = project["requires-python"]
    _dependency_groups(acc, data, groups, path, root, text)
    poetry = _table(
        _table(data.get("tool"), path, root, "tool", text).get("poetry"),
        path,
        root,
        "tool.poetry",
        text,
    )
    if poetry and not project:
        _poetry(acc, poetry, path, root, text)
    return acc.freeze()


def _dependency_groups(
    acc: _Acc, data: dict[str, Any], groups: tuple[str, ...], path: str, root: str, text: str
) -> None:
    table = _table(data.get("dependency-groups"), path, root, "dependency-groups", text)
    named = {canonicalize_name(k): v for k, v in table.items()}

    def expand(group: str, seen: tuple[str, ...]) -> list[str]:
        key = canonicalize_name(group)
        if key in seen:
            raise _error(
                root,
                path,
                f"dependency group include cycle: {' -> '.join([*seen, key])}",
                _line_of(text, f'include-group = "{group}"'),
                "remove one of the `{include-group = ...}` entries",
            )
        if key not in named:
            raise _error(
                root,
                path,
                f"no dependency group `{group}` in [dependency-groups]",
                _line_of(text, group),
                f"groups defined: {', '.join(sorted(named)) or 'none'}",
            )
        items = named[key]
        if not isinstance(items, list):
            raise _error(root, path, f"dependency group `{group}` must be a list", None)
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("include-group"), str):
                out.extend(expand(item["include-group"], (*seen, key)))
            else:
                raise _error(
                    root,
                    path,
                    f"dependency group `{group}` has an entry that is neither a requirement nor "
                    f"{{include-group = ...}}: {item!r}",
                    None,
                )
        return out

    for group in groups:
        _add_requirements(acc, expand(group, ()), path, root, text)


def poetry_constraint(value: str) -> str:
    """A poetry version constraint (^, ~, *, bare versions, comma/|| lists) as PEP 440."""
    value = value.strip()
    if value in ("*", ""):
        return ""
    if "||" in value:
        raise ValueError(f"`{value}`: alternatives (||) have no PEP 440 form")
    parts = []
    for part in (p.strip() for p in value.split(",")):
        for piece in part.split():
            parts.append(_poetry_one(piece))
    return ",".join(p for p in parts if p)


def _poetry_one(value: str) -> str:
    def numbers(v: str) -> list[int]:
        return [int(x) for x in v.split(".")]

    if value.startswith("^"):
        v = numbers(value[1:])
        first = next((i for i, x in enumerate(v) if x != 0), len(v) - 1)
        upper = [*v[:first], v[first] + 1]
        return f">={value[1:]},<{'.'.join(map(str, upper))}"
    if value.startswith("~") and not value.startswith("~="):
        v = numbers(value[1:])
        upper = [v[0] + 1] if len(v) == 1 else [v[0], v[1] + 1]
        return f">={value[1:]},<{'.'.join(map(str, upper))}"
    if re.match(r"^[0-9]", value):
        return f"=={value}"
    return value


def _poetry(acc: _Acc, poetry: dict[str, Any], path: str, root: str, text: str) -> None:
    acc.notes.append(
        f"{shown(root, path)}: read [tool.poetry.dependencies] best-effort "
        "(poetry constraints translated to PEP 440)"
    )
    if isinstance(poetry.get("name"), str):
        acc.project_name = poetry["name"]
    deps = _table(poetry.get("dependencies"), path, root, "tool.poetry.dependencies", text)
    for name, value in deps.items():
        line = _line_of(text, f"{name} =") or _line_of(text, name)
        version, extras, markers = value, [], None
        if isinstance(value, dict):
            if value.get("optional"):
                continue
            if any(k in value for k in ("git", "path", "url")):
                acc.warnings.append(
                    f"{shown(root, path)}:{line}: `{name}` comes from git/path/url; "
                    "left out, add it as `name @ URL` by hand"
                )
                continue
            version = value.get("version", "*")
            extras = value.get("extras", [])
            markers = value.get("markers")
        if not isinstance(version, str):
            raise _error(root, path, f"`{name}`: version must be a string", line)
        try:
            spec = poetry_constraint(version)
            SpecifierSet(spec)
        except (ValueError, InvalidSpecifier) as exc:
            raise _error(
                root,
                path,
                f"`{name} = {version!r}`: cannot translate the poetry constraint ({exc})",
                line,
                "write a PEP 440 range such as `>=1.2,<2`",
            ) from None
        if name.lower() == "python":
            acc.python = spec or None
            continue
        extra = f"[{','.join(extras)}]" if extras else ""
        marker = f"; {markers}" if markers else ""
        _add_requirements(acc, [f"{name}{extra}{spec}{marker}"], path, root, text)


def _mapping(value: object, key: str, path: str, root: str, text: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(
            root,
            path,
            f"unexpected content: `{key}` must be a table, found {type(value).__name__} {value!r}",
            _line_of(text, repr(value).strip("'")) if isinstance(value, str) else None,
            "compare it with what its tool writes; regenerate it if it was edited by hand",
        )
    return value


def _is_project(path: str, target: object) -> bool:
    """Whether a local path written in the file at `path` is the project's root."""
    if not isinstance(target, str):
        return False
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target)) == "."


def _sha256(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value.removeprefix("sha256:").lower()
    return None


@_checked
def parse_uv_lock(text: str, path: str = "uv.lock", *, root: str = "") -> Parsed:
    """uv.lock: every [[package]] with its version, source and artifact hashes."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="uv.lock")
    packages = data.get("package")
    if not isinstance(packages, list):
        raise _error(root, path, "no [[package]] entries", None, "run `uv lock` to write it")
    if isinstance(data.get("requires-python"), str):
        acc.python = data["requires-python"]
    edges: list[dict[str, Any]] = []
    for package in (_mapping(p, "[[package]]", path, root, text) for p in packages):
        name = canonicalize_name(str(package.get("name", "")))
        source = _mapping(package.get("source") or {}, "source", path, root, text)
        if source.get("editable") == "." or source.get("virtual") == ".":
            groups = _mapping(package.get("dev-dependencies") or {}, "dev", path, root, text)
            for edge in [*package.get("dependencies", []), *groups.get("dev", [])]:
                edges.append(_mapping(edge, "dependencies", path, root, text))
        if "editable" in source or "virtual" in source:
            where = source.get("editable", source.get("virtual"))
            if where == ".":
                acc.project = "editable" if "editable" in source else None
                acc.project_name = name
            else:
                acc.warnings.append(
                    f"{shown(root, path)}: `{name}` is a local workspace member ({where}); left out"
                )
            continue
        if "directory" in source or "path" in source:
            acc.warnings.append(f"{shown(root, path)}: `{name}` is a local path; left out")
            continue
        hashes = [package.get("sdist", {}).get("hash")] + [
            w.get("hash") for w in package.get("wheels", [])
        ]
        digests = tuple(d for d in (_sha256(h) for h in hashes) if d)
        url = None
        if "git" in source:
            url = f"git+{source['git']}"
        elif "url" in source:
            url = source["url"]
        elif "registry" in source:
            acc.index(source["registry"])
        acc.pins.append(Pin(name=name, version=package.get("version"), sha256=digests, url=url))
        acc.requirements.append(f"{name} @ {url}" if url else f"{name}=={package.get('version')}")
    acc.direct = _uv_lock_direct(edges, acc.pins)
    return acc.freeze()


def _uv_lock_direct(edges: list[dict[str, Any]], pins: list[Pin]) -> list[str]:
    """The root's dependency edges as requirements: `name[extras]==version; marker`."""
    versions: dict[str, set[str]] = {}
    for pin in pins:
        if pin.version is not None and pin.url is None:
            versions.setdefault(pin.name, set()).add(pin.version)
    out: list[str] = []
    for edge in edges:
        name = canonicalize_name(str(edge.get("name", "")))
        if name not in versions:
            continue  # a local workspace member, or a URL source: left out above
        extras = edge.get("extra") or []
        extra = f"[{','.join(sorted(str(e) for e in extras))}]" if extras else ""
        pinned = versions[name]
        version = f"=={next(iter(pinned))}" if len(pinned) == 1 else ""
        marker = f"; {edge['marker']}" if isinstance(edge.get("marker"), str) else ""
        text = str(Requirement(f"{name}{extra}{version}{marker}"))
        if text not in out:
            out.append(text)
    return out


@_checked
def parse_pylock(text: str, path: str = "pylock.toml", *, root: str = "") -> Parsed:
    """PEP 751 pylock.toml: [[packages]] with wheels/sdist/archive hashes, vcs, directories."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="pylock")
    if not str(data.get("lock-version", "")).startswith("1"):
        raise _error(
            root,
            path,
            f"unsupported lock-version {data.get('lock-version')!r}",
            _line_of(text, "lock-version"),
            'pylock.toml files written for PEP 751 have `lock-version = "1.0"`',
        )
    if isinstance(data.get("requires-python"), str):
        acc.python = data["requires-python"]
    for package in (_mapping(p, "[[packages]]", path, root, text) for p in data["packages"]):
        name = canonicalize_name(str(package.get("name", "")))
        marker = package.get("marker")
        if "directory" in package:
            if _is_project(path, package["directory"].get("path")):
                acc.project = "editable" if package["directory"].get("editable") else "install"
                acc.project_name = name
            else:
                acc.warnings.append(f"{shown(root, path)}: `{name}` is a local directory; left out")
            continue
        artifacts = [*package.get("wheels", []), package.get("sdist"), package.get("archive")]
        digests = tuple(
            a["hashes"]["sha256"].lower()
            for a in artifacts
            if isinstance(a, dict) and "sha256" in a.get("hashes", {})
        )
        url = None
        if "vcs" in package:
            vcs = package["vcs"]
            url = f"{vcs.get('type', 'git')}+{vcs['url']}@{vcs.get('commit-id', '')}".rstrip("@")
        elif "archive" in package:
            url = package["archive"].get("url")
        if isinstance(package.get("index"), str):
            acc.index(package["index"])
        version = package.get("version")
        acc.pins.append(Pin(name=name, version=version, sha256=digests, url=url, marker=marker))
        base = f"{name} @ {url}" if url else f"{name}=={version}" if version else name
        acc.requirements.append(base + (f"; {marker}" if marker else ""))
    return acc.freeze()


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
            line = _line_of(text, f"{name} =") or _line_of(text, name)
            if isinstance(value, str):
                req = name if value.strip() == "*" else f"{name}{_pipenv_version(value)}"
            elif isinstance(value, dict):
                if _is_project(path, value.get("path")):
                    acc.project = "editable" if value.get("editable") else "install"
                    acc.project_name = name
                    continue
                if "path" in value or "file" in value:
                    acc.warnings.append(
                        f"{shown(root, path)}:{line}: `{name}` is a local path; left out"
                    )
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


@_checked
def parse_pipfile_lock(
    text: str, path: str = "Pipfile.lock", *, root: str = "", dev: bool = False
) -> Parsed:
    """Pipfile.lock (JSON): default (and develop) with "version": "==x" and "hashes"."""
    data = _json(text, path, root)
    acc = _Acc(source=path, format="Pipfile.lock")
    meta = data.get("_meta", {})
    acc.python = meta.get("requires", {}).get("python_full_version") or meta.get(
        "requires", {}
    ).get("python_version")
    for source in meta.get("sources", []):
        if isinstance(source.get("url"), str):
            acc.index(source["url"])
    sections = ["default", "develop"] if dev else ["default"]
    for section in sections:
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            raise _error(root, path, f"`{section}` must be an object", None)
        for name, entry in entries.items():
            entry = _mapping(entry, f"{section}.{name}", path, root, text)
            canonical = canonicalize_name(name)
            marker = entry.get("markers")
            if entry.get("editable") or "path" in entry:
                if _is_project(path, entry.get("path")):
                    acc.project = "editable" if entry.get("editable") else "install"
                    acc.project_name = canonical
                else:
                    acc.warnings.append(f"{shown(root, path)}: `{name}` is a local path; left out")
                continue
            digests = tuple(d for d in (_sha256(h) for h in entry.get("hashes", [])) if d)
            if "git" in entry:
                url = f"git+{entry['git']}" + (f"@{entry['ref']}" if entry.get("ref") else "")
                acc.pins.append(Pin(name=canonical, url=url, marker=marker))
                req = f"{canonical} @ {url}"
            else:
                version = str(entry.get("version", ""))
                if not version.startswith("=="):
                    raise _error(
                        root,
                        path,
                        f'`{name}` has no exact version ("version": {version!r})',
                        _line_of(text, f'"{name}"'),
                        "run `pipenv lock` again",
                    )
                exact = version.removeprefix("==")
                acc.pins.append(Pin(name=canonical, version=exact, sha256=digests, marker=marker))
                req = f"{canonical}=={exact}"
            acc.requirements.append(req + (f"; {marker}" if marker else ""))
    return acc.freeze()


# ---------------------------------------------------------------- JSON(C)


def strip_jsonc(text: str) -> str:
    """JSON with comments and trailing commas, as plain JSON (strings untouched, lines kept)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("\n" * text.count("\n", i, end))
            i = end
        else:
            out.append(c)
            i += 1
    plain = "".join(out)
    # Trailing commas: a comma followed only by whitespace before } or ], outside strings.
    result: list[str] = []
    i, n = 0, len(plain)
    while i < n:
        c = plain[i]
        if c == '"':
            j = i + 1
            while j < n and plain[j] != '"':
                j += 2 if plain[j] == "\\" else 1
            result.append(plain[i : j + 1])
            i = j + 1
            continue
        if c == ",":
            j = i + 1
            while j < n and plain[j] in " \t\r\n":
                j += 1
            if j < n and plain[j] in "}]":
                i += 1
                continue
        result.append(c)
        i += 1
    return "".join(result)


def _json(text: str, path: str, root: str, *, jsonc: bool = False) -> dict[str, Any]:
    try:
        text = text.removeprefix(_BOM)
        data = json.loads(strip_jsonc(text) if jsonc else text)
    except json.JSONDecodeError as exc:
        raise _error(root, path, f"JSON syntax error: {exc.msg}", exc.lineno) from None
    if not isinstance(data, dict):
        raise _error(root, path, "expected an object at the top", 1)
    return data


@_checked
def parse_devcontainer(
    text: str, path: str = ".devcontainer/devcontainer.json", *, root: str = ""
) -> Parsed:
    """devcontainer.json (JSONC): image, containerEnv, forwardPorts, postCreateCommand."""
    data = _json(text, path, root, jsonc=True)
    acc = _Acc(source=path, format="devcontainer")
    if isinstance(data.get("image"), str):
        acc.image = data["image"]
        tag = re.search(r"python:(?:\d+-)?(3\.\d+)", data["image"])
        if tag:
            acc.python = tag.group(1)
    if "build" in data or "dockerFile" in data:
        acc.warnings.append(f"{shown(root, path)}: its Dockerfile build is not taken over")
    for key, value in (data.get("containerEnv") or {}).items():
        acc.env.append((str(key), str(value)))
    for port in data.get("forwardPorts") or []:
        if isinstance(port, int):
            acc.ports.append(port)
        else:
            acc.warnings.append(f"{shown(root, path)}: forwardPorts entry {port!r} left out")
    command = data.get("postCreateCommand")
    commands: list[object] = list(command.values()) if isinstance(command, dict) else [command]
    for item in commands:
        if isinstance(item, str) and item.strip():
            acc.setup.append(SetupStep(run=item))
        elif isinstance(item, list) and all(isinstance(p, str) for p in item):
            acc.setup.append(SetupStep(run=shlex.join(item)))
    if data.get("features"):
        acc.warnings.append(
            f"{shown(root, path)}: features ({', '.join(data['features'])}) are not taken over"
        )
    return acc.freeze()


# ---------------------------------------------------------------- conda environment.yml

# conda packages that are not Python distributions, with their Debian equivalents (or None).
CONDA_ONLY: Mapping[str, str | None] = {
    "gcc": "gcc",
    "gxx": "g++",
    "gcc_linux-64": "gcc",
    "gxx_linux-64": "g++",
    "c-compiler": "gcc",
    "cxx-compiler": "g++",
    "compilers": "build-essential",
    "make": "make",
    "cmake": "cmake",
    "git": "git",
    "libgomp": "libgomp1",
    "libgfortran": "libgfortran5",
    "libgfortran-ng": "libgfortran5",
    "libgfortran5": "libgfortran5",
    "gfortran": "gfortran",
    "fortran-compiler": "gfortran",
    "_openmp_mutex": "libgomp1",
    "openblas": "libopenblas0",
    "libopenblas": "libopenblas0",
    "ffmpeg": "ffmpeg",
    "graphviz": "graphviz",
    "nodejs": "nodejs",
    "openjdk": "default-jdk",
    "r-base": "r-base",
    "curl": "curl",
    "wget": "wget",
    "unzip": "unzip",
    "zlib": "zlib1g",
    "libffi": "libffi8",
    "openssl": "openssl",
    "sqlite": "sqlite3",
    "hdf5": "libhdf5-dev",
    "gdal": "gdal-bin",
    "libgdal": "libgdal-dev",
    "proj": "proj-bin",
    "geos": "libgeos-dev",
    "pandoc": "pandoc",
    "mkl": None,
    "cudatoolkit": None,
    "cudnn": None,
    "nccl": None,
    "libstdcxx-ng": None,
    "libgcc-ng": None,
}
# conda package names that differ on PyPI.
CONDA_TO_PYPI: Mapping[str, str] = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "pytables": "tables",
    "matplotlib-base": "matplotlib",
    "pyqt": "PyQt5",
    "tensorflow-base": "tensorflow",
    "msgpack-python": "msgpack",
    "python-graphviz": "graphviz",
    "pyyaml": "PyYAML",
}
_CONDA_SPEC = re.compile(
    r"^(?:(?P<channel>[A-Za-z0-9_.-]+)::)?(?P<name>[A-Za-z0-9_.-]+)\s*(?P<version>[^\s]*)"
    r"(?:\s+(?P<build>\S+))?$"
)


def conda_version(version: str) -> str:
    """A conda match-spec version (`=1.26`, `1.26.*`, `>=1,<2`, `==1.2`) as PEP 440."""
    version = version.strip()
    if not version:
        return ""
    if version.startswith("=") and not version.startswith("=="):
        version = version[1:]
        version = version.split("=", 1)[0]  # drop a build string
        return f"=={version}" if version.endswith("*") else f"=={version}.*"
    if re.match(r"^[0-9]", version):
        return f"=={version}"
    return version


@_checked
def parse_environment_yml(
    text: str, path: str = "environment.yml", *, root: str = "", read: Read | None = None
) -> Parsed:
    """conda environment.yml: python from `python=3.x`, the `pip:` list, PyPI-known packages.

    `-r FILE` in the pip: list is read through `read` (relative to environment.yml) and checked;
    it is named in `requirement_files`, its requirements not merged.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise _error(
            root,
            path,
            f"YAML syntax error: {exc.problem}",
            mark.line + 1 if mark else None,
            "check indentation (spaces, not tabs)",
        ) from None
    except yaml.YAMLError as exc:  # a control character (ReaderError) has no mark
        raise _error(root, path, f"YAML syntax error: {exc}", None) from None
    if not isinstance(data, dict):
        raise _error(root, path, "expected a mapping with `dependencies:`", 1)
    acc = _Acc(source=path, format="environment.yml")
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise _error(root, path, "`dependencies` must be a list", _line_of(text, "dependencies"))
    conda_only: list[tuple[str, str | None, int | None]] = []
    moved: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            pip = dep.get("pip")
            if not isinstance(pip, list):
                raise _error(root, path, f"unexpected entry {dep!r} in dependencies", None)
            for item in pip:
                line = _line_of(text, str(item))
                text_item = str(item).strip()
                if text_item.startswith(("-r ", "--requirement ", "--requirement=")):
                    _pip_include_in_conda(acc, text_item, path, root, read, line)
                    continue
                if text_item.startswith("-"):
                    _pip_option_in_conda(acc, text_item, path, root, line)
                    continue
                req = _requirement(text_item, root, path, line, "PEP 508, e.g. `numpy>=1.26`")
                acc.requirements.append(str(req))
                pin = _pin_of(req)
                if pin:
                    acc.pins.append(pin)
            continue
        line = _line_of(text, str(dep))
        match = _CONDA_SPEC.match(str(dep).strip())
        if not match:
            raise _error(root, path, f"`{dep}` is not a conda package spec", line)
        name = match.group("name").lower()
        version = match.group("version") or ""
        if name == "python":
            acc.python = _conda_python(version)
            continue
        if name == "pip":
            continue
        if name in CONDA_ONLY:
            conda_only.append((name, CONDA_ONLY[name], line))
            continue
        pypi = CONDA_TO_PYPI.get(name, name)
        try:
            spec = conda_version(version)
            req = Requirement(f"{pypi}{spec}")
        except InvalidRequirement:
            raise _error(
                root,
                path,
                f"`{dep}`: cannot read the conda version `{version}`",
                line,
                "write it as `name>=1.2` or move it to the `pip:` list",
            ) from None
        acc.requirements.append(str(req))
        pin = _pin_of(req)
        if pin:
            acc.pins.append(pin)
        moved.append(str(req) if pypi == name else f"{req!s} (conda `{name}`)")
    if conda_only:
        _conda_only_error(conda_only, path, root)
    if moved:
        acc.notes.append(
            f"{shown(root, path)}: conda packages taken from PyPI instead: {', '.join(moved)}"
        )
    if data.get("channels"):
        acc.notes.append(f"{shown(root, path)}: channels ({', '.join(data['channels'])}) not used")
    return acc.freeze()


def _pip_include_in_conda(
    acc: _Acc, item: str, path: str, root: str, read: Read | None, line: int | None
) -> None:
    target = re.split(r"[ =]", item, maxsplit=1)[1].strip().removeprefix("file:")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if read is None:
        raise _error(root, path, f"`{item}` names a file, and no files can be read here", None)
    if not acc.files:
        acc.files.append(path)
    included = _Acc(source=target, format="requirements")
    _RequirementsReader(read, root, included).file(target, constraint=False, via=(path, line or 1))
    acc.project = acc.project or included.project
    acc.requirement_files.append(target)
    for url in included.indexes:
        acc.index(url)
    acc.files.extend(f for f in included.files if f not in acc.files)
    acc.notes.extend(included.notes)
    acc.warnings.extend(included.warnings)


def _pip_option_in_conda(acc: _Acc, item: str, path: str, root: str, line: int | None) -> None:
    name, _, value = item.partition(" ") if " " in item else item.partition("=")
    if name in ("-i", "--index-url", "--extra-index-url"):
        acc.index(value.strip())
        return
    raise _error(
        root,
        path,
        f"`{item}` in the pip: list is not supported",
        line,
        "list requirements only; extra indexes with `--extra-index-url URL`",
    )


def _conda_python(version: str) -> str | None:
    version = version.strip()
    if not version:
        return None
    if version.startswith("=") and not version.startswith("=="):
        return version[1:].split("=")[0].rstrip(".*")
    if re.match(r"^[0-9]", version):
        return version.rstrip(".*")
    return version.replace("==", "")


def _conda_only_error(
    found: list[tuple[str, str | None, int | None]], path: str, root: str
) -> None:
    named = []
    debian = []
    for name, equivalent, _line in found:
        if equivalent:
            named.append(f"{name} (Debian: {equivalent})")
            debian.append(equivalent)
        else:
            named.append(f"{name} (no Debian equivalent)")
    hint = (
        f"add `system: [{', '.join(dict.fromkeys(debian))}]` to envd.yaml and remove them from "
        f"{path}"
        if debian
        else f"remove them from {path}"
    )
    if any(name in ("cudatoolkit", "cudnn", "nccl") for name, _, _ in found):
        hint += "; CUDA comes with the PyPI wheels (e.g. torch) and `cuda:` in envd.yaml"
    raise _error(
        root,
        path,
        f"conda-only packages that envd cannot install from PyPI: {', '.join(named)}",
        found[0][2],
        hint,
    )


# ---------------------------------------------------------------- small binder/repo2docker files


def parse_apt_txt(text: str, path: str = "apt.txt", *, root: str = "") -> Parsed:
    """apt.txt: one Debian package per line; `#` comments."""
    acc = _Acc(source=path, format="apt.txt")
    text = text.removeprefix(_BOM)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        for name in line.split():
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?", name):
                raise _error(
                    root,
                    path,
                    f"`{name}` is not a Debian package name",
                    number,
                    "one package per line: lowercase letters, digits and + - .",
                )
            if name not in acc.system:
                acc.system.append(name)
    return acc.freeze()


def parse_runtime_txt(text: str, path: str = "runtime.txt", *, root: str = "") -> Parsed:
    """runtime.txt: `python-3.10`, `python-3`, `python-3.10.4`."""
    acc = _Acc(source=path, format="runtime.txt")
    text = text.removeprefix(_BOM)
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise _error(root, path, "the file is empty", 1, "write e.g. `python-3.11`")
    number, line = lines[0]
    match = re.fullmatch(r"python-(3(?:\.\d+){0,2})", line)
    if not match:
        raise _error(
            root,
            path,
            f"`{line}` is not a Python runtime",
            number,
            "write `python-3.11` (or `python-3`); R runtimes (`r-...`) are not supported",
        )
    acc.python = match.group(1)
    return acc.freeze()


def parse_python_version(text: str, path: str = ".python-version", *, root: str = "") -> Parsed:
    """.python-version (pyenv, uv): `3.11` or `3.11.7`; the first version line wins."""
    acc = _Acc(source=path, format=".python-version")
    text = text.removeprefix(_BOM)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(?:cpython-|python)?(3(?:\.\d+){0,2})", line)
        if not match:
            raise _error(
                root,
                path,
                f"`{line}` is not a CPython version",
                number,
                "write e.g. `3.11`; pypy and `system` are not supported",
            )
        acc.python = match.group(1)
        return acc.freeze()
    raise _error(root, path, "no Python version in the file", 1, "write e.g. `3.11`")


def parse_postbuild(text: str, path: str = "postBuild", *, root: str = "") -> Parsed:
    """postBuild: a script run after packages; a setup step that names the file."""
    acc = _Acc(source=path, format="postBuild")
    first = text.splitlines()[0] if text else ""
    interpreter = "bash"
    if first.startswith("#!"):
        words = first[2:].split()
        if words and words[0].endswith("/env") and len(words) > 1:
            words = words[1:]
        if words:
            interpreter = posixpath.basename(words[0])
            if interpreter == "sh":
                interpreter = "sh"
    acc.setup.append(SetupStep(run=f"{interpreter} {shlex.quote(path)}", files=(path,)))
    return acc.freeze()


# ---------------------------------------------------------------- cog.yaml


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
                _line_of(text, "python_version"),
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
