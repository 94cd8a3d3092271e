"""envd.yaml, schema version 1: the typed model and its pure parser.

Parsing never touches the network or Docker; `load_spec` (envd.gateways.projectfiles) reads
the files, with size and type checks, and hands text to `parse_spec`, which is pure and tested
without I/O: it reads other files only through the `read_text` and `is_file` callbacks.

Keys (all but `base` optional):

    version: 1
    name: churn              # default: the directory name, lowercased; either way it must be a
                             #   valid Docker repository path component (envd/<name>:<tag>):
                             #   [a-z0-9]+((.|_|__|-*)[a-z0-9]+)*, at most 128 characters
    base: {image: REF} | {debian: SUITE}
    python: "3.11"
    system: [git]            # Debian packages, optionally `=version`
    packages: [numpy>=1.26]  # PEP 508: by name, or `name @ https://.../file.whl[#sha256=...]`
                             #   (locked by URL and sha256; an sdist only with from_source),
                             #   or `name @ git+https://host/repo@REF` (locked to its commit,
                             #   with from_source); local paths are refused
    build: {from_source: [name, ...]}  # packages built from source (sdists, git)
    requirements: FILE | [FILE, ...]   # requirements files inside the project (no `..`)
    constraints: [PEP 508, ...]        # optional; stored, not yet used
    overrides: [PEP 508, ...]          # optional; stored, not yet used
    indexes: [https://...]   # no credentials in the URL
    gpu: auto | required | none
    cuda: "12.4"
    env: {NAME: value}       # POSIX names; values without NUL or line breaks
    setup: ["cmd", {run: "bash postBuild", files: [postBuild]}]
    ports: [8888]            # decimal integers 1-65535, each once
    project: editable | install        # optional; stored, not yet used
    runs: {params: [...], data: [...], outputs: [...], metrics: [...]}
                             # relative paths inside the project; stored, not yet used
    watch: true

Every mistake is a SpecError with the file, the line, the key path and a hint. Anything the
parser cannot understand is refused, never guessed: YAML 1.1 surprises (`0x50`, `22:22`,
`yes`, unquoted `3.10`) are named with what they would have meant.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
from envd.model import direct as direct_urls
from envd.model import reqfiles

SPEC_FILENAME = "envd.yaml"
LOCK_FILENAME = "envd.lock"
SCHEMA_VERSION = 1
NAME_MAX = 128  # "envd/" + name must stay well inside Docker's 255-character repository limit
MAX_DEPTH = 32  # YAML nesting; envd.yaml needs 4

GpuMode = Literal["auto", "required", "none"]
ProjectMode = Literal["editable", "install"]


@dataclass(frozen=True)
class Base:
    """Exactly one of `image` (any image reference) or `debian` (a suite, built with mmdebstrap)."""

    image: str | None = None
    debian: str | None = None


@dataclass(frozen=True)
class SetupStep:
    """One `setup:` entry: a command, and project files it needs (relative, inside the project)."""

    run: str
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runs:
    """`runs:`: what every run records. Relative paths inside the project; `dir/` names a folder."""

    params: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class FilePin:
    """An exact version written in a requirements file or lock, with its sha256 digests (hex).

    `envctl lock` resolves it to that version and refuses an index whose artifacts do not
    carry these digests; the lock keeps them. `source` is the absolute file, `line` where known.
    """

    name: str  # canonical
    version: str
    sha256: tuple[str, ...]
    source: str
    line: int | None = None


@dataclass(frozen=True)
class DirectUrl:
    """A direct URL requirement (`name @ https://...`): locked by the URL's file and its sha256.

    `url` is as written (a `#sha256=` fragment kept); `sha256` the digests the requirement
    allows (its fragment, or a requirements file's `--hash` options), () for any; `source`
    the absolute file that names it and `line` where.
    """

    name: str  # canonical
    requirement: str  # normalised, as in Spec.all_requirements
    url: str
    sha256: tuple[str, ...]
    source: str
    line: int | None = None
    key_path: str = ""  # `packages[i]` in envd.yaml; "" in a requirements file

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Spec:
    """A validated envd.yaml. Requirement strings are normalised (str(packaging Requirement))."""

    project_dir: str  # absolute path of the directory holding envd.yaml
    name: str
    base: Base
    python: str | None = None  # "3.11" or "3.11.2"
    system: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # from `packages:`
    requirements_file: str | None = None  # the first of requirements_files, as written
    requirements: tuple[str, ...] = ()  # requirement lines read from requirements_files, in order
    indexes: tuple[str, ...] = ()
    gpu: GpuMode = "auto"
    cuda: str | None = None  # "12.4"
    env: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    setup: tuple[str, ...] = ()  # the commands of setup_steps, in order
    ports: tuple[int, ...] = ()
    watch: bool = True
    version: int = SCHEMA_VERSION
    requirements_files: tuple[str, ...] = ()  # every requirements file, normalised relative paths
    constraints: tuple[str, ...] = ()  # PEP 508, normalised
    overrides: tuple[str, ...] = ()  # PEP 508, normalised
    project: ProjectMode | None = None
    runs: Runs = field(default_factory=Runs)
    setup_steps: tuple[SetupStep, ...] = ()
    # `build: {from_source: [...]}`: packages with no wheel for the target, built from their
    # sdists in this project's own build step (canonical names). Nothing else is ever built.
    from_source: tuple[str, ...] = ()
    # Exact pins (with hashes) from the files named in `requirements:`, in the order read.
    pins: tuple[FilePin, ...] = ()
    # Direct URL requirements of `packages` and requirements files, in the order written.
    direct: tuple[DirectUrl, ...] = ()

    @property
    def all_requirements(self) -> tuple[str, ...]:
        """`packages` then `requirements`, in the order written."""
        return self.packages + self.requirements


# ---------------------------------------------------------------- parsing

_KEYS = (
    "version",
    "name",
    "base",
    "python",
    "system",
    "packages",
    "requirements",
    "constraints",
    "overrides",
    "indexes",
    "gpu",
    "cuda",
    "env",
    "setup",
    "ports",
    "project",
    "runs",
    "watch",
    "build",
)
_BASE_KEYS = ("image", "debian")
_RUNS_KEYS = ("params", "data", "outputs", "metrics")
_SETUP_KEYS = ("run", "files")
# One path component of a Docker repository name (distribution/reference).
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")  # Docker's, minus `-*` (ReDoS)
_SEPARATOR = re.compile(r"^(?:[._]|__|-+)$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")
_PYTHON = re.compile(r"^3\.\d{1,2}(\.\d{1,2})?$")
_CUDA = re.compile(r"^\d{1,2}\.\d{1,2}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
_DECIMAL = re.compile(r"^[0-9]+$")
# An image reference: [domain[:port]/]path[:tag][@digest] (distribution/reference grammar).
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # `-+`, not Docker's `[-]*`: no ReDoS
_IMAGE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar")
_YAML_TAG = "tag:yaml.org,2002:"

ReadText = Callable[[str], str]
IsFile = Callable[[str], bool]


class FileRefused(Exception):
    """Raised by a `read_text` callback for a file that exists but may not be read.

    The parser reports it at the envd.yaml key that names the file.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Loader(yaml.SafeLoader):
    """SafeLoader's node graph with a nesting limit (the composer recurses once per level)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "invalid YAML"
        raise SpecError(
            f"YAML syntax error: {problem}",
            file=source,
            line=line,
            key_path=_key_near(text, line),
            hint="check indentation (spaces, not tabs) and closing brackets and quotes",
        ) from None
    except yaml.reader.ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        raise SpecError(
            f"YAML syntax error: character {exc.character!r} is not allowed in YAML",
            file=source,
            line=line,
            key_path=_key_near(text, line),
            hint="remove control characters; write them as escapes in a double-quoted string",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            f"YAML syntax error: {exc}", file=source, line=1, key_path="(top)"
        ) from None


def _key_near(text: str, line: int) -> str:
    """The top-level key whose value holds `line` (YAML could not say; a plain text guess)."""
    for raw in reversed(text.split("\n")[:line]):
        match = re.match(r"^([A-Za-z_][\w-]*)\s*:", raw)
        if match:
            return match.group(1)
    return "(top)"


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _tag(node: yaml.Node) -> str:
    tag = str(node.tag)
    return tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = _tag(node)
    value = str(node.value)
    if len(value) > 40:
        value = value[:37] + "..."
    names = {
        "str": "a string",
        "int": "a number",
        "float": "a decimal number",
        "bool": "true/false",
        "timestamp": "a date",
    }
    if tag == "null":
        return "nothing (null)"
    return f"{names.get(tag, tag)} ({value!r})"


def _show(text: str, limit: int = 40) -> str:
    """`text` for a message, cut short when long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yaml_int(node: yaml.ScalarNode) -> int | None:
    """What YAML 1.1 makes of an int-tagged scalar (0x50, 0o17, 1_000, 22:22), if small."""
    if len(node.value) > 24:
        return None
    try:
        return int(yaml.constructor.SafeConstructor().construct_yaml_int(node))
    except (ValueError, TypeError):
        return None


def suggest_name(text: str) -> str:
    """A valid project name close to `text`: ASCII, lowercase, bad separators become `-`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    lower = ascii_text.lower()
    parts = re.split(r"([^a-z0-9]+)", lower)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(part)
        else:
            out.append(part if _SEPARATOR.match(part) else "-")
    name = "".join(out)
    name = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", name)
    name = name[:NAME_MAX]
    name = re.sub(r"[^a-z0-9]+$", "", name)
    return name if _NAME.match(name) else "project"


def _direct_reference(text: str) -> str | None:
    """What kind of non-index requirement `text` is (a URL, VCS or local path), if it is one."""
    lowered = text.strip().lower()
    try:
        url = Requirement(text).url
    except InvalidRequirement:
        url = None
        if lowered.startswith(_VCS_PREFIXES):
            return "a VCS requirement"
        if "://" in lowered or lowered.startswith("file:"):
            return "a URL requirement"
        if (
            lowered.startswith((".", "/", "~"))
            or "/" in lowered
            or "\\" in lowered
            or lowered.endswith(_ARCHIVE_SUFFIXES)
        ):
            return "a local path requirement"
        return None
    if url is None:
        if lowered.split(";")[0].strip().endswith(_ARCHIVE_SUFFIXES):
            return "a local path requirement"
        return None
    url = url.lower()
    if url.startswith(_VCS_PREFIXES):
        return "a VCS requirement (`name @ git+...`)"
    if url.startswith("file:"):
        return "a local path requirement (`name @ file:...`)"
    return "a URL requirement (`name @ https://...`)"


_DIRECT_HINT = (
    "envd pins every package by version and sha256: name a released version (e.g. "
    "`pkg==1.2`, with its index under `indexes:` if it is not on PyPI), or, in `packages:` or "
    "a requirements file, a file by URL (`pkg @ https://host/pkg-1.2-py3-none-any.whl`)"
)


def _check_requirement(text: str, *, allow_url: bool = False) -> str:
    """The normalised requirement, or _BadRequirement (message and hint).

    `allow_url`: a direct URL requirement (`name @ https://...`) is taken, locked by URL and
    sha256; VCS requirements and local paths are refused either way, saying why."""
    kind = _direct_reference(text)
    if kind is not None and allow_url and kind.startswith(("a URL", "a VCS")):
        try:
            direct_urls.check_url(text)
        except InvalidRequirement:
            pass  # said below
        except direct_urls.DirectUrlProblem as exc:
            raise _BadRequirement(exc.message, exc.hint) from None
        except ValueError as exc:  # urlsplit: "Invalid IPv6 URL" (a `[` in the host)
            raise _BadRequirement(
                f"`{text}` names a URL that cannot be parsed ({exc})",
                "name a file by its https URL (`pkg @ https://host/pkg-1.2-py3-none-any.whl`)",
            ) from None
        else:
            return str(Requirement(text))
    if kind is not None:
        raise _BadRequirement(f"`{text}` is {kind}, which envd does not support yet", _DIRECT_HINT)
    try:
        return str(Requirement(text))
    except InvalidRequirement as exc:
        raise _BadRequirement(
            f"`{text}` is not a valid requirement: {exc}",
            "PEP 508, e.g. `numpy>=1.26` or `pandas==2.2.2`",
        ) from None


REQUIREMENT_FORMATS = ("requirements", "pyproject", "uv.lock", "Pipfile.lock", "pylock")


def requirements_format(relpath: str) -> str:
    """What a file named in `requirements:` is, by its name (else a pip requirements file)."""
    name = posixpath.basename(relpath)
    if name == "pyproject.toml":
        return "pyproject"
    if name in ("uv.lock", "Pipfile.lock"):
        return name
    if name == "pylock.toml" or re.fullmatch(r"pylock\.[^.]+\.toml", name):
        return "pylock"
    return "requirements"


@dataclass(frozen=True)
class _Read:
    """What the files named in `requirements:` say, together."""

    files: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    pins: tuple[FilePin, ...] = ()
    indexes: tuple[str, ...] = ()
    direct: tuple[DirectUrl, ...] = ()

    def plus(self, other: _Read) -> _Read:
        return _Read(
            files=self.files + tuple(f for f in other.files if f not in self.files),
            requirements=self.requirements + other.requirements,
            constraints=self.constraints + other.constraints,
            pins=self.pins + other.pins,
            indexes=self.indexes + tuple(i for i in other.indexes if i not in self.indexes),
            direct=self.direct + other.direct,
        )


def _line_of(text: str, needle: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def _line_naming(text: str, name: str) -> int | None:
    """The first line of a TOML or JSON lock that names package `name` (any spelling)."""
    pattern = "[-_.]+".join(re.escape(part) for part in canonicalize_name(name).split("-"))
    found = re.compile(rf"""(name\s*=\s*["']|^\s*"){pattern}["']""", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), start=1):
        if found.search(line):
            return number
    return None


def _logical_line(text: str, number: int) -> str | None:
    """The logical line (continuations joined) that starts on physical line `number`."""
    lines = text.removeprefix("\ufeff").splitlines()
    if not 1 <= number <= len(lines):
        return None
    parts = []
    for line in lines[number - 1 :]:
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        parts.append(line)
        break
    return "".join(parts)


class _BadRequirement(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class _Parser:
    def __init__(
        self,
        source: str,
        project_dir: str,
        read_text: ReadText | None,
        is_file: IsFile | None = None,
    ) -> None:
        self.source = source
        self.project_dir = project_dir
        self.read_text = read_text
        self.is_file = is_file

    def error(self, message: str, node: yaml.Node, path: str, hint: str | None = None) -> SpecError:
        return SpecError(message, file=self.source, line=_line(node), key_path=path, hint=hint)

    # -------------------------------------------------------- scalars and shapes

    def scalar(self, node: yaml.Node, path: str, tag: str, expected: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != f"{_YAML_TAG}{tag}":
            hint = None
            if (
                tag == "str"
                and isinstance(node, yaml.ScalarNode)
                and _tag(node) in ("int", "float", "bool", "timestamp")
            ):
                hint = f'quote it: `"{node.value}"` (YAML reads it as {_kind(node)})'
            raise self.error(f"expected {expected}, found {_kind(node)}", node, path, hint=hint)
        return str(node.value)

    def string(self, node: yaml.Node, path: str) -> str:
        value = self.scalar(node, path, "str", "a string")
        if not value.strip():
            raise self.error("must not be empty", node, path)
        if "\x00" in value:
            raise self.error("must not contain a NUL character", node, path)
        return value

    def sequence(self, node: yaml.Node, path: str, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            hint = None
            if isinstance(node, yaml.ScalarNode) and _tag(node) == "null":
                hint = f"write `{path}: []`, or remove the key"
            elif isinstance(node, yaml.ScalarNode):
                hint = f"write a list: `{path}: [{node.value}]`"
            raise self.error(f"expected {what}, found {_kind(node)}", node, path, hint=hint)
        return list(node.value)

    def strings(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        items = self.sequence(node, path, "a list of strings")
        return [(self.string(item, f"{path}[{i}]"), item) for i, item in enumerate(items)]

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"expected a mapping, found {_kind(node)}", node, path or "(top)")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or _tag(key_node) == "merge":
                raise self.error(
                    "keys must be plain names",
                    key_node,
                    path or "(top)",
                    hint="write each key out; merge keys (`<<`) and complex keys are not read",
                )
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in out:
                raise self.error(
                    f"duplicate key `{key}` (first on line {_line(out[key][0])})",
                    key_node,
                    where,
                    hint="YAML keeps only one of them; remove or merge the other",
                )
            if allowed is not None and key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = (
                    f"did you mean `{close[0]}`?"
                    if close
                    else f"allowed keys: {', '.join(allowed)}"
                )
                raise self.error(f"unknown key `{key}`", key_node, where, hint=hint)
            out[key] = (key_node, value_node)
        return out

    def relpath(self, node: yaml.Node, path: str, *, file: bool) -> str:
        """A path relative to the project that stays inside it; normalised, `dir/` kept."""
        text = self.string(node, path)
        if any(c in text for c in "\n\r"):
            raise self.error("a path must not contain line breaks", node, path)
        if "\\" in text:
            raise self.error(
                f"`{text}` uses a backslash", node, path, hint="separate folders with `/`"
            )
        if text.startswith(("/", "~")):
            raise self.error(
                f"`{text}` is not relative to the project",
                node,
                path,
                hint="name files inside the project, relative to the folder of envd.yaml",
            )
        norm = posixpath.normpath(text)
        if norm == ".." or norm.startswith("../"):
            raise self.error(
                f"`{text}` points outside the project",
                node,
                path,
                hint="envd only reads and records files inside the project directory",
            )
        is_dir = text.endswith("/") or norm == "."
        if file and is_dir:
            raise self.error(f"`{text}` names a folder; a file is needed here", node, path)
        return norm + "/" if is_dir and norm != "." else norm

    def relpaths(self, node: yaml.Node, path: str, *, file: bool) -> tuple[str, ...]:
        seen: dict[str, int] = {}
        for i, item in enumerate(self.sequence(node, path, "a list of paths")):
            value = self.relpath(item, f"{path}[{i}]", file=file)
            if value in seen:
                raise self.error(
                    f"`{value}` is listed twice (first at {path}[{seen[value]}])",
                    item,
                    f"{path}[{i}]",
                )
            seen[value] = i
        return tuple(seen)

    # -------------------------------------------------------- the document

    def parse(self, text: str) -> Spec:
        root = _compose(text, self.source)
        if root is None:
            raise SpecError(
                "the file is empty",
                file=self.source,
                line=1,
                key_path="(top)",
                hint="start from a template: `envctl init --list`",
            )
        if not isinstance(root, yaml.MappingNode):
            raise self.error(
                f"expected a mapping of settings at the top, found {_kind(root)}",
                root,
                "(top)",
                hint="see `envctl init --list` for examples",
            )
        fields = self.mapping(root, "", _KEYS)
        values = {key: value for key, (_, value) in fields.items()}
        version = self.version(values.get("version"))
        if "base" not in values:
            raise self.error(
                "missing required key `base`",
                root,
                "base",
                hint="add `base: {debian: bookworm}` or `base: {image: python:3.11-slim}`",
            )
        name = self.name(values.get("name"))
        base = self.base(values["base"])
        read = self.requirements(values.get("requirements"), has_project="project" in values)
        packages, direct = self.packages(values.get("packages"))
        from_source = self.build(values.get("build"))
        self.check_direct(direct + read.direct, from_source)
        files, requirements = read.files, read.requirements
        steps = self.setup(values.get("setup"))
        indexes = list(self.indexes(values.get("indexes")))
        indexes += [i for i in read.indexes if i not in indexes]
        return Spec(
            project_dir=self.project_dir,
            name=name,
            base=base,
            python=self.python(values.get("python")),
            system=tuple(self.system(values.get("system"))),
            packages=packages,
            requirements_file=files[0] if files else None,
            requirements=requirements,
            indexes=tuple(indexes),
            gpu=self.gpu(values.get("gpu")),
            cuda=self.cuda(values.get("cuda")),
            env=self.env(values.get("env")),
            setup=tuple(step.run for step in steps),
            ports=self.ports(values.get("ports")),
            watch=self.boolean(values["watch"], "watch") if "watch" in values else True,
            version=version,
            requirements_files=files,
            constraints=self.pep508_list(values.get("constraints"), "constraints")
            + read.constraints,
            overrides=self.pep508_list(values.get("overrides"), "overrides"),
            project=self.project(values.get("project")),
            runs=self.runs(values.get("runs")),
            setup_steps=steps,
            from_source=from_source,
            pins=read.pins,
            direct=direct + read.direct,
        )

    def version(self, node: yaml.Node | None) -> int:
        if node is None:
            return SCHEMA_VERSION
        value = self.scalar(node, "version", "int", "the number 1")
        if not _DECIMAL.match(value) or len(value) > 6 or int(value) != SCHEMA_VERSION:
            raise self.error(
                f"unsupported schema version {_show(value)}; "
                f"this envd reads version {SCHEMA_VERSION}",
                node,
                "version",
                hint="upgrade envd, or set `version: 1`",
            )
        return SCHEMA_VERSION

    def name(self, node: yaml.Node | None) -> str:
        if node is None:
            directory = Path(self.project_dir).name
            default = directory.lower()
            if _NAME.match(default) and len(default) <= NAME_MAX:
                return default
            raise SpecError(
                f"the project name defaults to the directory name `{directory}`, which Docker "
                "cannot use in an image name (lowercase letters and digits, separated by one "
                f". or _, two _, or dashes; at most {NAME_MAX} characters)",
                file=self.source,
                line=1,
                key_path="name",
                hint=f"set `name: {suggest_name(directory)}` in envd.yaml",
            )
        value = self.string(node, "name")
        if not _NAME.match(value) or len(value) > NAME_MAX:
            raise self.error(
                f"`{value}` is not a valid project name: Docker needs lowercase letters and "
                "digits, separated by one . or _, two _, or dashes, "
                f"at most {NAME_MAX} characters",
                node,
                "name",
                hint=f"set `name: {suggest_name(value)}` in envd.yaml",
            )
        return value

    def base(self, node: yaml.Node) -> Base:
        if isinstance(node, yaml.ScalarNode) and _tag(node) == "str":
            raise self.error(
                f"expected a mapping, found {_kind(node)}",
                node,
                "base",
                hint=f"write `base: {{image: {node.value}}}` or `base: {{debian: bookworm}}`",
            )
        fields = self.mapping(node, "base", _BASE_KEYS)
        if len(fields) != 1:
            raise self.error(
                "give exactly one of `image` or `debian`",
                node,
                "base",
                hint="`base: {debian: bookworm}` or `base: {image: python:3.11-slim}`",
            )
        ((key, (_, value)),) = fields.items()
        text = self.string(value, f"base.{key}")
        if key == "debian":
            if not _SUITE.match(text):
                raise self.error(
                    f"`{text}` is not a Debian suite name",
                    value,
                    "base.debian",
                    hint="e.g. bookworm or trixie",
                )
            return Base(debian=text)
        match = _IMAGE.match(text)
        if match is None or len(match.group("path")) + len(match.group("domain") or "") > 255:
            lower = text.lower()
            hint = (
                f"repository names are lowercase: `{lower}`"
                if lower != text and _IMAGE.match(lower)
                else "e.g. `python:3.11-slim` or `registry.example.com/team/base@sha256:...`"
            )
            raise self.error(f"`{text}` is not an image reference", value, "base.image", hint=hint)
        return Base(image=text)

    def python(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(("float", "int")):
            raise self.error(
                f"python must be a quoted string, found {_kind(node)}",
                node,
                "python",
                hint=f'write `python: "{node.value}"` (unquoted, 3.10 reads as 3.1)',
            )
        value = self.string(node, "python")
        if not _PYTHON.match(value):
            raise self.error(
                f"`{value}` is not a Python version", node, "python", hint='e.g. "3.11" or "3.11.2"'
            )
        return value

    def cuda(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(("float", "int")):
            raise self.error(
                f"cuda must be a quoted string, found {_kind(node)}",
                node,
                "cuda",
                hint=f'write `cuda: "{node.value}"`',
            )
        value = self.string(node, "cuda")
        if not _CUDA.match(value):
            raise self.error(
                f"`{value}` is not a CUDA version", node, "cuda", hint='major.minor, e.g. "12.4"'
            )
        return value

    def gpu(self, node: yaml.Node | None) -> GpuMode:
        if node is None:
            return "auto"
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        if node.tag.endswith("bool") or value not in ("auto", "required", "none"):
            hint = "`gpu: auto` uses GPUs when present"
            if node.tag.endswith("bool"):
                hint = f"YAML reads `{value}` as true/false; write `gpu: required` or `gpu: none`"
            raise self.error(
                f"expected one of auto, required, none; found {_kind(node)}",
                node,
                "gpu",
                hint=hint,
            )
        return cast(GpuMode, value)

    def build(self, node: yaml.Node | None) -> tuple[str, ...]:
        if node is None:
            return ()
        fields = self.mapping(node, "build", ("from_source",))
        if "from_source" not in fields:
            return ()
        names: list[str] = []
        for i, (text, item) in enumerate(
            self.strings(fields["from_source"][1], "build.from_source")
        ):
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", text):
                raise self.error(
                    f"{_show(text)} is not a package name",
                    item,
                    f"build.from_source[{i}]",
                    hint="name the packages to build from source, e.g. `from_source: [numpy]`",
                )
            names.append(re.sub(r"[-_.]+", "-", text).lower())
        return tuple(sorted(set(names)))

    def project(self, node: yaml.Node | None) -> ProjectMode | None:
        if node is None:
            return None
        value = node.value if isinstance(node, yaml.ScalarNode) else None
        if not node.tag.endswith(":str") or value not in ("editable", "install"):
            raise self.error(
                f"expected editable or install, found {_kind(node)}",
                node,
                "project",
                hint="`project: editable` installs the project itself, live at /workspace",
            )
        if self.is_file is not None and not (
            self.is_file("pyproject.toml") or self.is_file("setup.py")
        ):
            raise self.error(
                "`project:` installs the project itself, but it has no pyproject.toml or setup.py",
                node,
                "project",
                hint="add a pyproject.toml next to envd.yaml, or remove `project:`",
            )
        return cast(ProjectMode, value)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        value = self.scalar(node, path, "bool", "true or false")
        return value.lower() in ("true", "yes", "on", "y")

    def system(self, node: yaml.Node | None) -> list[str]:
        if node is None:
            return []
        out = []
        for i, (name, item) in enumerate(self.strings(node, "system")):
            if not _DEBIAN_PACKAGE.match(name):
                raise self.error(
                    f"`{name}` is not a Debian package name",
                    item,
                    f"system[{i}]",
                    hint="lowercase letters, digits and + - . (optionally `=version`)",
                )
            out.append(name)
        return out

    def requirement(self, text: str, node: yaml.Node, path: str) -> str:
        try:
            return _check_requirement(text)
        except _BadRequirement as exc:
            raise self.error(exc.message, node, path, hint=exc.hint) from None

    def packages(self, node: yaml.Node | None) -> tuple[tuple[str, ...], tuple[DirectUrl, ...]]:
        """`packages:`, and the direct URL requirements among them."""
        if node is None:
            return (), ()
        out: list[str] = []
        direct: list[DirectUrl] = []
        for i, (text, item) in enumerate(self.strings(node, "packages")):
            path = f"packages[{i}]"
            try:
                requirement = _check_requirement(text, allow_url=True)
            except _BadRequirement as exc:
                raise self.error(exc.message, item, path, hint=exc.hint) from None
            out.append(requirement)
            parsed = Requirement(requirement)
            if parsed.url:
                digest = direct_urls.fragment_sha256(parsed.url)
                direct.append(
                    DirectUrl(
                        canonicalize_name(parsed.name),
                        requirement,
                        parsed.url,
                        (digest,) if digest else (),
                        self.source,
                        _line(item),
                        path,
                    )
                )
        return tuple(out), tuple(direct)

    def check_direct(self, direct: tuple[DirectUrl, ...], from_source: tuple[str, ...]) -> None:
        """Each direct URL names a wheel or sdist of its project; an sdist only when
        `build: {from_source: [...]}` names the project (nothing is built by accident)."""
        for d in direct:
            if direct_urls.is_vcs(d.url):
                if d.name not in from_source:
                    raise SpecError(
                        direct_urls.vcs_problem(d.requirement).message,
                        file=d.source,
                        line=d.line,
                        key_path=d.key_path,
                        hint=f"add `build: {{from_source: [{d.name}]}}` to envd.yaml (with a "
                        "compiler in `system:` if it has C code), or name a wheel by URL",
                    )
                continue
            try:
                artifact = direct_urls.artifact_of(d.url, d.name)
            except direct_urls.DirectUrlProblem as exc:
                raise SpecError(
                    f"`{d.requirement}`: {exc.message}",
                    file=d.source,
                    line=d.line,
                    key_path=d.key_path,
                    hint=exc.hint,
                ) from None
            if not artifact.wheel and d.name not in from_source:
                raise SpecError(
                    f"`{d.requirement}` is an sdist ({artifact.filename}), and envd builds "
                    "nothing from source unless envd.yaml says so",
                    file=d.source,
                    line=d.line,
                    key_path=d.key_path,
                    hint=f"add `build: {{from_source: [{d.name}]}}` to envd.yaml (with a "
                    "compiler in `system:` if it has C code), or point the URL at a wheel",
                )

    def pep508_list(self, node: yaml.Node | None, key: str) -> tuple[str, ...]:
        if node is None:
            return ()
        return tuple(
            self.requirement(text, item, f"{key}[{i}]")
            for i, (text, item) in enumerate(self.strings(node, key))
        )

    def requirements(self, node: yaml.Node | None, *, has_project: bool = False) -> _Read:
        if node is None:
            return _Read()
        if isinstance(node, yaml.SequenceNode):
            named = [
                (self.relpath(item, f"requirements[{i}]", file=True), item, f"requirements[{i}]")
                for i, item in enumerate(node.value)
            ]
        elif isinstance(node, yaml.ScalarNode) and _tag(node) == "str":
            named = [(self.relpath(node, "requirements", file=True), node, "requirements")]
        else:
            raise self.error(
                f"expected a file name or a list of file names, found {_kind(node)}",
                node,
                "requirements",
                hint="`requirements: requirements.txt` or `requirements: [a.txt, b.txt]`",
            )
        files: dict[str, None] = {}
        for relpath, item, path in named:
            if relpath in files:
                raise self.error(f"`{relpath}` is listed twice", item, path)
            files[relpath] = None
        out = _Read(files=tuple(files))
        for relpath, item, path in named:
            if self.read_text is None:
                break
            text = self.read_file(relpath, item, path, top=True)
            assert text is not None
            out = out.plus(self.requirements_file(relpath, text, item, path, has_project))
        return out

    def read_file(self, relpath: str, item: yaml.Node, path: str, *, top: bool) -> str | None:
        """A file named in `requirements:` (top) or included by one (None when missing)."""
        assert self.read_text is not None
        try:
            return self.read_text(relpath)
        except (FileNotFoundError, NotADirectoryError):
            if not top:
                return None
            raise self.error(
                f"requirements file `{relpath}` does not exist",
                item,
                path,
                hint=f"create it next to {self.source}, or remove it from `requirements:`",
            ) from None
        except IsADirectoryError:
            raise self.error(f"requirements file `{relpath}` is a directory", item, path) from None
        except FileRefused as exc:
            raise self.error(exc.message, item, path, hint=exc.hint) from None

    def absolute(self, relpath: str) -> str:
        return posixpath.join(self.project_dir, relpath) if self.project_dir else relpath

    def requirements_file(
        self, relpath: str, text: str, item: yaml.Node, path: str, has_project: bool
    ) -> _Read:
        """One file named in `requirements:`, read as what its name says it is."""
        kind = requirements_format(relpath)
        if kind == "requirements":
            return self.pip_requirements(relpath, text, item, path, has_project)
        parsed = reqfiles.PARSERS[kind](text, relpath, root=self.project_dir)
        source = self.absolute(relpath)
        by_name: dict[str, list[str]] = {}
        for requirement in parsed.requirements:
            line = _line_naming(text, Requirement(requirement).name)
            kind_of = _direct_reference(requirement)
            if kind_of is not None:
                raise SpecError(
                    f"`{requirement}` is {kind_of}, which envd does not support yet",
                    file=source,
                    line=line,
                    hint=_DIRECT_HINT,
                )
            written = by_name.setdefault(str(canonicalize_name(Requirement(requirement).name)), [])
            if requirement not in written:
                written.append(requirement)
        requirements: list[str] = []
        for package, written in by_name.items():
            # A lock resolved for several platforms may pin a package twice (by marker):
            # then the name is required and the resolver picks one of the pinned versions.
            requirements.append(_check_requirement(written[0] if len(written) == 1 else package))
        pins = tuple(
            FilePin(
                pin.name,
                pin.version,
                pin.sha256,
                source,
                _line_naming(text, pin.name),
            )
            for pin in parsed.pins
            if pin.version is not None
        )
        constraints: tuple[str, ...] = ()
        if parsed.direct:
            # uv.lock: the project's own dependency edges (markers kept, so a package for
            # another platform is not required here), every other pin an `==` constraint.
            requirements = [_check_requirement(r) for r in parsed.direct]
            constraints = tuple(
                f"{package}=={written[0].split('==', 1)[1]}"
                for package, written in by_name.items()
                if len(written) == 1 and "==" in written[0]
            )
        return _Read(
            requirements=tuple(requirements),
            constraints=constraints,
            pins=pins,
            indexes=self.file_indexes(parsed, text, source),
        )

    def file_indexes(self, parsed: reqfiles.Parsed, text: str, source: str) -> tuple[str, ...]:
        for url in parsed.indexes:
            netloc = url.split("://", 1)[-1].split("/", 1)[0]
            if "@" in netloc:
                raise SpecError(
                    "an index URL must not hold credentials (envd.yaml and envd.lock are "
                    "committed)",
                    file=source,
                    line=_line_of(text, netloc),
                    hint="give credentials to uv instead: ~/.netrc or UV_INDEX_<NAME>_PASSWORD",
                )
        return parsed.indexes

    def pip_requirements(
        self, relpath: str, text: str, item: yaml.Node, path: str, has_project: bool
    ) -> _Read:
        """A pip requirements file as pip reads it: -r/-c includes, --hash, index options."""
        texts = {relpath: text}
        refused: dict[str, str] = {}

        def read(included: str) -> str | None:
            if included in texts:
                return texts[included]
            if included.startswith("/") or included == ".." or included.startswith("../"):
                refused[included] = "points outside the project"
                return None
            try:
                found = self.read_file(included, item, path, top=False)
            except SpecError as exc:
                if exc.file != self.source:
                    raise  # the included file's own error (e.g. not UTF-8)
                refused[included] = exc.message.split(": ", 2)[-1]
                return None
            if found is not None:
                texts[included] = found
            return found

        try:
            parsed = reqfiles.parse_requirements(relpath, read, root=self.project_dir)
        except SpecError as exc:
            raise self.explained(exc, texts, refused) from None
        if parsed.project is not None and parsed.project_line is not None and not has_project:
            where, number = parsed.project_line
            raise SpecError(
                "`-e` or a path to the project itself installs the project, which envd does "
                "with `project:` in envd.yaml",
                file=self.absolute(where),
                line=number,
                hint="remove this line and add `project: editable` (or `install`) to envd.yaml",
            )
        requirements = []
        direct: list[DirectUrl] = []
        url_pins = {p.name: p for p in parsed.pins if p.url is not None}
        for requirement, (where, number) in zip(
            parsed.requirements, parsed.requirement_lines, strict=True
        ):
            try:
                requirements.append(_check_requirement(requirement, allow_url=True))
            except _BadRequirement as bad:
                raise SpecError(
                    bad.message, file=self.absolute(where), line=number, hint=bad.hint
                ) from None
            written = Requirement(requirements[-1])
            if written.url:
                name = canonicalize_name(written.name)
                pin = url_pins.get(name)
                digests = tuple(d.lower() for d in pin.sha256) if pin else ()
                direct.append(
                    DirectUrl(
                        name,
                        requirements[-1],
                        written.url,
                        digests,
                        self.absolute(where),
                        number,
                    )
                )
        constraints = []
        for constraint, (where, number) in zip(
            parsed.constraints, parsed.constraint_lines, strict=True
        ):
            try:
                constraints.append(_check_requirement(constraint))
            except _BadRequirement as bad:
                raise SpecError(
                    bad.message, file=self.absolute(where), line=number, hint=bad.hint
                ) from None
        pins = []
        for pin in parsed.pins:
            if pin.version is None:
                continue
            index = next(
                i
                for i, r in enumerate(parsed.requirements)
                if canonicalize_name(Requirement(r).name) == pin.name
            )
            where, number = parsed.requirement_lines[index]
            pins.append(FilePin(pin.name, pin.version, pin.sha256, self.absolute(where), number))
        source = self.absolute(relpath)
        return _Read(
            files=tuple(p for p in parsed.files if p != relpath),
            requirements=tuple(requirements),
            constraints=tuple(constraints),
            pins=tuple(pins),
            indexes=self.file_indexes(parsed, text, source),
            direct=tuple(direct),
        )

    def explained(
        self, exc: SpecError, texts: dict[str, str], refused: dict[str, str]
    ) -> SpecError:
        """reqfiles' error, said as envd says it where envd knows more (refusals, URLs)."""
        if exc.line is None:
            return exc
        for relpath, text in texts.items():
            if self.absolute(relpath) != exc.file:
                continue
            for included, why in refused.items():
                if f"`{included}`" in exc.message:
                    return SpecError(
                        f"included file `{included}` {why}"
                        if not why.startswith("requirements file")
                        else why,
                        file=exc.file,
                        line=exc.line,
                        hint="include only files inside the project, relative to this file",
                    )
            raw = _logical_line(text, exc.line)
            if raw is not None:
                requirement = re.split(r"\s--?[A-Za-z]", re.sub(r"(^|\s)#.*$", "", raw))[0]
                kind = _direct_reference(requirement.strip()) if requirement.strip() else None
                if kind is not None:
                    return SpecError(
                        f"`{requirement.strip()}` is {kind}, which envd does not support yet",
                        file=exc.file,
                        line=exc.line,
                        hint=_DIRECT_HINT,
                    )
        return exc

    def indexes(self, node: yaml.Node | None) -> list[str]:
        if node is None:
            return []
        out: list[str] = []
        seen: set[str] = set()
        for i, (url, item) in enumerate(self.strings(node, "indexes")):
            if not _URL.match(url):
                raise self.error(
                    f"`{url}` is not an http(s) URL",
                    item,
                    f"indexes[{i}]",
                    hint="e.g. https://download.pytorch.org/whl/cu124",
                )
            netloc = url.split("://", 1)[1].split("/", 1)[0]
            if "@" in netloc:
                raise self.error(
                    "an index URL must not hold credentials (envd.yaml and envd.lock are "
                    "committed)",
                    item,
                    f"indexes[{i}]",
                    hint="give credentials to uv instead: ~/.netrc or UV_INDEX_<NAME>_PASSWORD",
                )
            normalised = url.rstrip("/")
            if normalised in seen:
                raise self.error(f"`{url}` is listed twice", item, f"indexes[{i}]")
            seen.add(normalised)
            out.append(normalised)
        return out

    def env(self, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
        if node is None:
            return ()
        pairs = []
        for key, (key_node, value) in self.mapping(node, "env", None).items():
            if not _ENV_NAME.match(key):
                raise self.error(
                    f"`{key}` is not a valid environment variable name",
                    key_node,
                    f"env.{key}",
                    hint="POSIX names: ASCII letters, digits and _, not starting with a digit",
                )
            if (
                not isinstance(value, yaml.ScalarNode)
                or _tag(value) == "null"
                or _tag(value) not in ("str", "int", "float", "bool", "timestamp")
            ):
                raise self.error(
                    f"expected a string value, found {_kind(value)}",
                    value,
                    f"env.{key}",
                    hint=f'quote it: `{key}: "..."`',
                )
            text = str(value.value)
            bad = next((c for c in ("\x00", "\n", "\r") if c in text), None)
            if bad is not None:
                what = "a NUL character" if bad == "\x00" else "a line break"
                raise self.error(
                    f"the value holds {what}, which cannot round-trip through an image's ENV "
                    "(a process environment ends a value at NUL; Dockerfile ENV lines and "
                    "env files end it at a line break)",
                    value,
                    f"env.{key}",
                    hint="keep values on one line; put longer text in a file in the project",
                )
            pairs.append((key, text))
        return tuple(sorted(pairs))

    def setup(self, node: yaml.Node | None) -> tuple[SetupStep, ...]:
        if node is None:
            return ()
        steps = []
        for i, item in enumerate(self.sequence(node, "setup", "a list of commands")):
            path = f"setup[{i}]"
            if isinstance(item, yaml.MappingNode):
                fields = self.mapping(item, path, _SETUP_KEYS)
                if "run" not in fields:
                    raise self.error(
                        "missing required key `run`",
                        item,
                        f"{path}.run",
                        hint='e.g. `{run: "bash postBuild", files: [postBuild]}`',
                    )
                run = self.string(fields["run"][1], f"{path}.run")
                files: tuple[str, ...] = ()
                if "files" in fields:
                    files = self.relpaths(fields["files"][1], f"{path}.files", file=False)
                    for j, relpath in enumerate(files):
                        file_node = cast(yaml.SequenceNode, fields["files"][1]).value[j]
                        if (
                            self.is_file is not None
                            and not relpath.endswith("/")
                            and not self.is_file(relpath)
                        ):
                            raise self.error(
                                f"`{relpath}` is not a file in the project",
                                file_node,
                                f"{path}.files[{j}]",
                                hint="create it, or remove it from `files:`",
                            )
                steps.append(SetupStep(run=run, files=files))
            else:
                steps.append(SetupStep(run=self.string(item, path)))
        return tuple(steps)

    def runs(self, node: yaml.Node | None) -> Runs:
        if node is None:
            return Runs()
        fields = self.mapping(node, "runs", _RUNS_KEYS)
        lists = {
            key: self.relpaths(value, f"runs.{key}", file=key in ("params", "metrics"))
            for key, (_, value) in fields.items()
        }
        return Runs(**lists)

    def ports(self, node: yaml.Node | None) -> tuple[int, ...]:
        if node is None:
            return ()
        seen: dict[int, int] = {}
        for i, item in enumerate(self.sequence(node, "ports", "a list of port numbers")):
            path = f"ports[{i}]"
            if isinstance(item, yaml.ScalarNode) and _tag(item) == "str":
                text = item.value.strip()
                hint = "e.g. `ports: [8888]`"
                if _DECIMAL.match(text):
                    hint = f"write the number without quotes: `{text}`"
                elif re.match(r"^[0-9]{1,5}/(tcp|udp)$", text, re.IGNORECASE):
                    hint = f"envd publishes TCP ports as numbers: `{text.split('/')[0]}`"
                elif re.match(r"^[0-9]{1,5}:[0-9]{1,5}$", text):
                    hint = "envd publishes a port on the same host port: list the number only"
                raise self.error(
                    f"expected a port number, found {_kind(item)}", item, path, hint=hint
                )
            value = self.scalar(item, path, "int", "a port number")
            if not _DECIMAL.match(value):
                meant = _yaml_int(cast(yaml.ScalarNode, item))
                hint = "write the port as a plain decimal number, e.g. `8888`"
                if meant is not None:
                    hint = f"YAML reads `{value}` as {meant}; write the port in decimal"
                raise self.error(
                    f"`{_show(value)}` is not a plain decimal port number", item, path, hint=hint
                )
            port = int(value) if len(value) <= 6 else 0
            if not 1 <= port <= 65535:
                raise self.error(f"port {_show(value)} is out of range 1-65535", item, path)
            if port in seen:
                raise self.error(
                    f"port {port} is listed twice (first at ports[{seen[port]}])", item, path
                )
            seen[port] = i
        return tuple(seen)


def parse_spec(
    text: str,
    *,
    source: str,
    project_dir: str,
    read_text: ReadText | None = None,
    is_file: IsFile | None = None,
) -> Spec:
    """Parse and validate envd.yaml text (pure: files are read only through the callbacks)."""
    return _Parser(source, project_dir, read_text, is_file).parse(text)
