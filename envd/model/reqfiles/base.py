"""What every requirements format shares: the typed result, its builder, errors that
name the file, the one `parse` signature, and the TOML and JSON(C) readers."""

from __future__ import annotations

import functools
import inspect
import json
import posixpath
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol

from packaging.requirements import InvalidRequirement, Requirement
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
    """A command run after packages (envd.yaml's `setup:`, or a file's own setup); `files` are
    the project files it needs and is keyed on (relative, inside the project)."""

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
    # Local packages in a subfolder of the project that the file installs editable from the
    # project's files (uv workspace members, Pipfile `{path = "sub", editable = true}`):
    # paths relative to the project, checked with envd.model.safenames.
    members: tuple[str, ...] = ()


class Parser(Protocol):
    """The one signature of every format's `parse`: the file's text and relative path, the root
    errors join it with, and `read` for the files it includes (None: it may include none)."""

    def __call__(
        self, text: str, path: str, *, root: str = "", read: Read | None = None
    ) -> Parsed: ...


def _nothing(path: str) -> str | None:
    """A `read` for a file read alone: every included file is missing."""
    return None


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
    members: list[str] = field(default_factory=list)

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
            members=tuple(self.members),
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


def line_of(text: str, needle: str) -> int | None:
    """The first line (from 1) that holds `needle`; None when none does."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


COMMENT = re.compile(r"(^|\s+)#.*$")  # a requirements file's comment, to the line's end


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """A requirements file's lines joined at trailing backslashes, numbered by their first
    physical line (as pip; a comment ends a continuation)."""
    start: int | None = None
    parts: list[str] = []
    for number, line in enumerate(text.removeprefix(_BOM).splitlines(), start=1):
        if not line.endswith("\\") or COMMENT.match(line):
            if COMMENT.match(line):
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
        raise _error(root, path, f"`{key}` must be a table", line_of(text, key.split(".")[-1]))
    return value


def _string_list(value: object, path: str, root: str, key: str, text: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _error(
            root, path, f"`{key}` must be a list of strings", line_of(text, key.split(".")[-1])
        )
    return list(value)


def _add_requirements(acc: _Acc, items: list[str], path: str, root: str, text: str) -> None:
    for item in items:
        req = _requirement(item, root, path, line_of(text, item), "PEP 508, e.g. `numpy>=1.26`")
        acc.requirements.append(str(req))
        pin = _pin_of(req)
        if pin is not None:
            acc.pins.append(pin)


def _mapping(value: object, key: str, path: str, root: str, text: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(
            root,
            path,
            f"unexpected content: `{key}` must be a table, found {type(value).__name__} {value!r}",
            line_of(text, repr(value).strip("'")) if isinstance(value, str) else None,
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
