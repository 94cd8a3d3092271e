"""YAML node handling for envd.yaml: composition with a depth limit, line numbers, the
words that name what a node is, and `Nodes`, the typed accessors the parser builds on."""

from __future__ import annotations

import difflib
import posixpath
import re
from typing import Any

import yaml

from envd.errors import SpecError

MAX_DEPTH = 32  # YAML nesting; envd.yaml needs 4
YAML_TAG = "tag:yaml.org,2002:"


class Loader(yaml.SafeLoader):
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


def compose(text: str, source: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or "invalid YAML"
        raise SpecError(
            f"YAML syntax error: {problem}",
            file=source,
            line=line,
            key_path=key_near(text, line),
            hint="check indentation (spaces, not tabs) and closing brackets and quotes",
        ) from None
    except yaml.reader.ReaderError as exc:
        position = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, position) + 1
        raise SpecError(
            f"YAML syntax error: character {exc.character!r} is not allowed in YAML",
            file=source,
            line=line,
            key_path=key_near(text, line),
            hint="remove control characters; write them as escapes in a double-quoted string",
        ) from None
    except yaml.YAMLError as exc:
        raise SpecError(
            f"YAML syntax error: {exc}", file=source, line=1, key_path="(top)"
        ) from None


def key_near(text: str, line: int) -> str:
    """The top-level key whose value holds `line` (YAML could not say; a plain text guess)."""
    for raw in reversed(text.split("\n")[:line]):
        match = re.match(r"^([A-Za-z_][\w-]*)\s*:", raw)
        if match:
            return match.group(1)
    return "(top)"


def node_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def node_tag(node: yaml.Node) -> str:
    tag = str(node.tag)
    return tag[len(YAML_TAG) :] if tag.startswith(YAML_TAG) else tag


def node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node_tag(node)
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


def show(text: str, limit: int = 40) -> str:
    """`text` for a message, cut short when long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def yaml_int(node: yaml.ScalarNode) -> int | None:
    """What YAML 1.1 makes of an int-tagged scalar (0x50, 0o17, 1_000, 22:22), if small."""
    if len(node.value) > 24:
        return None
    try:
        return int(yaml.constructor.SafeConstructor().construct_yaml_int(node))
    except (ValueError, TypeError):
        return None


class Nodes:
    """Typed access to the nodes of one file (`source`); every mistake a SpecError at its line."""

    source: str

    def error(self, message: str, node: yaml.Node, path: str, hint: str | None = None) -> SpecError:
        return SpecError(message, file=self.source, line=node_line(node), key_path=path, hint=hint)

    # -------------------------------------------------------- scalars and shapes

    def scalar(self, node: yaml.Node, path: str, tag: str, expected: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != f"{YAML_TAG}{tag}":
            hint = None
            if (
                tag == "str"
                and isinstance(node, yaml.ScalarNode)
                and node_tag(node) in ("int", "float", "bool", "timestamp")
            ):
                hint = f'quote it: `"{node.value}"` (YAML reads it as {node_kind(node)})'
            raise self.error(f"expected {expected}, found {node_kind(node)}", node, path, hint=hint)
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
            if isinstance(node, yaml.ScalarNode) and node_tag(node) == "null":
                hint = f"write `{path}: []`, or remove the key"
            elif isinstance(node, yaml.ScalarNode):
                hint = f"write a list: `{path}: [{node.value}]`"
            raise self.error(f"expected {what}, found {node_kind(node)}", node, path, hint=hint)
        return list(node.value)

    def strings(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node]]:
        items = self.sequence(node, path, "a list of strings")
        return [(self.string(item, f"{path}[{i}]"), item) for i, item in enumerate(items)]

    def mapping(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"expected a mapping, found {node_kind(node)}", node, path or "(top)")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or node_tag(key_node) == "merge":
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
                    f"duplicate key `{key}` (first on line {node_line(out[key][0])})",
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
