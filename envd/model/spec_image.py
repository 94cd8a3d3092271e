"""envd.yaml's keys that say what is built on: `name`, `base`, `python`, `cuda`, `gpu`
(a part of `spec_parser._Parser`, which is one of these)."""

import re
from pathlib import Path
from typing import cast

import yaml

from envd.errors import SpecError
from envd.model.pythons import AUTO, buildable_for
from envd.model.spec import (
    BASE_KEYS,
    NAME_MAX,
    NAME_PATTERN,
    Base,
    GpuMode,
    suggest_name,
)
from envd.model.yamlnodes import (
    Nodes,
    node_kind,
    node_tag,
)

_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")
_PYTHON = re.compile(r"^3(\.\d{1,2}(\.\d{1,2})?)?$")  # "3": the newest Python 3 envd builds
_CUDA = re.compile(r"^\d{1,2}\.\d{1,2}$")
# An image reference: [domain[:port]/]path[:tag][@digest] (distribution/reference grammar).
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # `-+`, not Docker's `[-]*`: no ReDoS
_IMAGE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


class ImageSections(Nodes):
    """`name`, `base`, `python`, `cuda`, `gpu`."""

    project_dir: str

    def name(self, node: yaml.Node | None) -> str:
        if node is None:
            directory = Path(self.project_dir).name
            default = directory.lower()
            if NAME_PATTERN.match(default) and len(default) <= NAME_MAX:
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
        if not NAME_PATTERN.match(value) or len(value) > NAME_MAX:
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
        if isinstance(node, yaml.ScalarNode) and node_tag(node) == "str":
            raise self.error(
                f"expected a mapping, found {node_kind(node)}",
                node,
                "base",
                hint=f"write `base: {{image: {node.value}}}` or `base: {{debian: bookworm}}`",
            )
        fields = self.mapping(node, "base", BASE_KEYS)
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

    def base_for(
        self,
        node: yaml.Node | None,
        python: str | None,
        python_node: yaml.Node | None,
        root: yaml.Node,
    ) -> Base:
        """`base:`, or the Debian suite `python:` names when there is none (`python: "3"` the
        newest; `python: auto` none yet: `envctl lock` chooses it)."""
        if python == AUTO:
            if node is not None:
                raise self.error(
                    "`python: auto` lets `envctl lock` choose the base, but `base` is set too",
                    node,
                    "base",
                    hint='remove `base:`, or name the Python (e.g. `python: "3.11"`)',
                )
            return Base()
        if node is not None:
            return self.base(node)
        buildable = buildable_for(python) if python else None
        if buildable is None:
            raise self.error(
                "missing required key `base`",
                python_node or root,
                "base",
                hint="add `base: {debian: bookworm}` or `base: {image: python:3.11-slim}`, "
                "or write `python: auto` to let `envctl lock` choose",
            )
        return Base(debian=buildable.suite)

    def python(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(("float", "int")):
            raise self.error(
                f"python must be a quoted string, found {node_kind(node)}",
                node,
                "python",
                hint=f'write `python: "{node.value}"` (unquoted, 3.10 reads as 3.1)',
            )
        value = self.string(node, "python")
        if value == AUTO:
            return value
        if not _PYTHON.match(value):
            raise self.error(
                f"`{value}` is not a Python version",
                node,
                "python",
                hint='e.g. "3.11" or "3.11.2", "3" (the newest envd builds) or auto',
            )
        return value

    def cuda(self, node: yaml.Node | None) -> str | None:
        if node is None:
            return None
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(("float", "int")):
            raise self.error(
                f"cuda must be a quoted string, found {node_kind(node)}",
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
                f"expected one of auto, required, none; found {node_kind(node)}",
                node,
                "gpu",
                hint=hint,
            )
        return cast(GpuMode, value)
