"""envd.yaml, schema version 1: the typed model and its pure parser.

Parsing never touches the network or Docker; `load_spec` reads the files and hands text to
`parse_spec`, which is pure and tested without I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from envd.errors import SpecError

SPEC_FILENAME = "envd.yaml"
LOCK_FILENAME = "envd.lock"
SCHEMA_VERSION = 1

GpuMode = Literal["auto", "required", "none"]


@dataclass(frozen=True)
class Base:
    """Exactly one of `image` (any image reference) or `debian` (a suite, built with mmdebstrap)."""

    image: str | None = None
    debian: str | None = None


@dataclass(frozen=True)
class Spec:
    """A validated envd.yaml. Requirement strings are normalised (str(packaging Requirement))."""

    project_dir: str  # absolute path of the directory holding envd.yaml
    name: str
    base: Base
    python: str | None = None  # "3.11" or "3.11.2"
    system: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # from `packages:`
    requirements_file: str | None = None  # as written, relative to project_dir
    requirements: tuple[str, ...] = ()  # requirement lines read from requirements_file
    indexes: tuple[str, ...] = ()
    gpu: GpuMode = "auto"
    cuda: str | None = None  # "12.4"
    env: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    setup: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    watch: bool = True
    version: int = SCHEMA_VERSION

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
    "indexes",
    "gpu",
    "cuda",
    "env",
    "setup",
    "ports",
    "watch",
)
_BASE_KEYS = ("image", "debian")
_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")
_PYTHON = re.compile(r"^3\.\d{1,2}(\.\d{1,2})?$")
_CUDA = re.compile(r"^\d{1,2}\.\d{1,2}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")

ReadText = Callable[[str], str]


class _Loader(yaml.SafeLoader):
    """SafeLoader's node graph, refusing duplicate keys (PyYAML silently keeps the last)."""


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
            hint="check indentation (spaces, not tabs) and closing brackets and quotes",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"YAML syntax error: {exc}", file=source, line=1) from None


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    value = node.value
    names = {"str": "a string", "int": "a number", "float": "a number", "bool": "true/false"}
    if tag == "null":
        return "nothing (null)"
    return f"{names.get(tag, tag)} ({value!r})"


class _Parser:
    def __init__(self, source: str, project_dir: str, read_text: ReadText | None) -> None:
        self.source = source
        self.project_dir = project_dir
        self.read_text = read_text

    def error(self, message: str, node: yaml.Node, path: str, hint: str | None = None) -> SpecError:
        return SpecError(message, file=self.source, line=_line(node), key_path=path, hint=hint)

    # -------------------------------------------------------- scalars and shapes

    def scalar(self, node: yaml.Node, path: str, tag: str, expected: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != f"tag:yaml.org,2002:{tag}":
            raise self.error(f"expected {expected}, found {_kind(node)}", node, path)
        return str(node.value)

    def string(self, node: yaml.Node, path: str) -> str:
        value = self.scalar(node, path, "str", "a string")
        if not value.strip():
            raise self.error("must not be empty", node, path)
        return value

    def strings(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"expected a list of strings, found {_kind(node)}", node, path)
        return [(self.string(item, f"{path}[{i}]"), item) for i, item in enumerate(node.value)]

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"expected a mapping, found {_kind(node)}", node, path)
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            where = f"{path}.{key_node.value}" if path else str(key_node.value)
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error("keys must be plain names", key_node, path)
            key = str(key_node.value)
            if key in out:
                raise self.error(
                    f"duplicate key `{key}` (first on line {_line(out[key][0])})", key_node, where
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

    # -------------------------------------------------------- the document

    def parse(self, text: str) -> Spec:
        root = _compose(text, self.source)
        if root is None:
            raise SpecError(
                "the file is empty",
                file=self.source,
                line=1,
                hint="start from a template: `envctl init --list`",
            )
        if not isinstance(root, yaml.MappingNode):
            raise self.error(
                f"expected a mapping of settings at the top, found {_kind(root)}",
                root,
                "",
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
        requirements_file, requirements = self.requirements(values.get("requirements"))
        return Spec(
            project_dir=self.project_dir,
            name=self.name(values.get("name")),
            base=self.base(values["base"]),
            python=self.python(values.get("python")),
            system=tuple(self.system(values.get("system"))),
            packages=tuple(self.packages(values.get("packages"))),
            requirements_file=requirements_file,
            requirements=requirements,
            indexes=tuple(self.indexes(values.get("indexes"))),
            gpu=self.gpu(values.get("gpu")),
            cuda=self.cuda(values.get("cuda")),
            env=self.env(values.get("env")),
            setup=tuple(s for s, _ in self.strings(values["setup"], "setup"))
            if "setup" in values
            else (),
            ports=self.ports(values.get("ports")),
            watch=self.boolean(values["watch"], "watch") if "watch" in values else True,
            version=version,
        )

    def version(self, node: yaml.Node | None) -> int:
        if node is None:
            return SCHEMA_VERSION
        value = self.scalar(node, "version", "int", "the number 1")
        if int(value) != SCHEMA_VERSION:
            raise self.error(
                f"unsupported schema version {value}; this envd reads version {SCHEMA_VERSION}",
                node,
                "version",
                hint="upgrade envd, or set `version: 1`",
            )
        return SCHEMA_VERSION

    def name(self, node: yaml.Node | None) -> str:
        if node is None:
            default = Path(self.project_dir).name.lower()
            return re.sub(r"[^a-z0-9._-]+", "-", default).strip("._-") or "project"
        value = self.string(node, "name")
        if not _NAME.match(value):
            suggestion = re.sub(r"[^a-z0-9._-]+", "-", value.lower()).strip("._-")
            raise self.error(
                f"`{value}` is not a valid project name (lowercase letters, digits, . _ -)",
                node,
                "name",
                hint=f"try `name: {suggestion}`" if suggestion else None,
            )
        return value

    def base(self, node: yaml.Node) -> Base:
        if isinstance(node, yaml.ScalarNode):
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
        if any(c.isspace() for c in text):
            raise self.error(f"`{text}` is not an image reference", value, "base.image")
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
            raise self.error(
                f"expected one of auto, required, none; found {_kind(node)}",
                node,
                "gpu",
                hint="`gpu: auto` uses GPUs when present",
            )
        return cast(GpuMode, value)

    def boolean(self, node: yaml.Node, path: str) -> bool:
        return self.scalar(node, path, "bool", "true or false") in ("true", "True", "yes", "on")

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
            return str(Requirement(text))
        except InvalidRequirement as exc:
            raise self.error(
                f"`{text}` is not a valid requirement: {exc}",
                node,
                path,
                hint="PEP 508, e.g. `numpy>=1.26` or `pandas==2.2.2`",
            ) from None

    def packages(self, node: yaml.Node | None) -> list[str]:
        if node is None:
            return []
        return [
            self.requirement(text, item, f"packages[{i}]")
            for i, (text, item) in enumerate(self.strings(node, "packages"))
        ]

    def requirements(self, node: yaml.Node | None) -> tuple[str | None, tuple[str, ...]]:
        if node is None:
            return None, ()
        relpath = self.string(node, "requirements")
        if self.read_text is None:
            return relpath, ()
        try:
            text = self.read_text(relpath)
        except (FileNotFoundError, IsADirectoryError):
            raise self.error(
                f"requirements file `{relpath}` does not exist",
                node,
                "requirements",
                hint=f"create it next to {self.source}, or remove `requirements:`",
            ) from None
        return relpath, parse_requirements_text(text, relpath)

    def indexes(self, node: yaml.Node | None) -> list[str]:
        if node is None:
            return []
        out = []
        for i, (url, item) in enumerate(self.strings(node, "indexes")):
            if not _URL.match(url):
                raise self.error(
                    f"`{url}` is not an http(s) URL",
                    item,
                    f"indexes[{i}]",
                    hint="e.g. https://download.pytorch.org/whl/cu124",
                )
            out.append(url.rstrip("/"))
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
                    hint="letters, digits and _, not starting with a digit",
                )
            if not isinstance(value, yaml.ScalarNode) or value.tag.endswith("null"):
                raise self.error(
                    f"expected a string value, found {_kind(value)}",
                    value,
                    f"env.{key}",
                    hint=f'quote it: `{key}: "..."`',
                )
            pairs.append((key, str(value.value)))
        return tuple(sorted(pairs))

    def ports(self, node: yaml.Node | None) -> tuple[int, ...]:
        if node is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"expected a list of port numbers, found {_kind(node)}", node, "ports")
        out = []
        for i, item in enumerate(node.value):
            port = int(self.scalar(item, f"ports[{i}]", "int", "a port number"))
            if not 1 <= port <= 65535:
                raise self.error(f"port {port} is out of range 1-65535", item, f"ports[{i}]")
            out.append(port)
        return tuple(out)


def parse_requirements_text(text: str, source: str) -> tuple[str, ...]:
    """Requirement lines of a requirements file; options and bad lines are errors with lines."""
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise SpecError(
                f"options such as `{line.split()[0]}` are not supported in requirements files",
                file=source,
                line=number,
                hint="list packages only; use `indexes:` in envd.yaml for extra indexes",
            )
        try:
            out.append(str(Requirement(line)))
        except InvalidRequirement as exc:
            raise SpecError(
                f"`{line}` is not a valid requirement: {exc}",
                file=source,
                line=number,
                hint="PEP 508, e.g. `numpy>=1.26`",
            ) from None
    return tuple(out)


def parse_spec(
    text: str, *, source: str, project_dir: str, read_text: ReadText | None = None
) -> Spec:
    """Parse and validate envd.yaml text (pure: files are read only through `read_text`)."""
    return _Parser(source, project_dir, read_text).parse(text)
