"""envd.yaml's parser: one method per key, on the YAML node accessors and the requirements
section; `parse_spec` is the entry point (pure: files are read only through callbacks)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
from envd.model import direct as direct_urls
from envd.model.pythons import AUTO, buildable_for
from envd.model.spec import (
    BASE_KEYS,
    KEYS,
    NAME_MAX,
    NAME_PATTERN,
    RUNS_KEYS,
    SCHEMA_VERSION,
    SETUP_KEYS,
    Base,
    DirectUrl,
    GpuMode,
    IsFile,
    ProjectMode,
    ReadText,
    Runs,
    SetupStep,
    Spec,
    suggest_name,
)
from envd.model.spec_project import project_requirements
from envd.model.spec_requirements import (
    BadRequirement,
    RequirementsSection,
    check_requirement,
)
from envd.model.yamlnodes import (
    compose,
    node_kind,
    node_line,
    node_tag,
    show,
    yaml_int,
)

_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_SUITE = re.compile(r"^[a-z][a-z0-9-]*$")
_PYTHON = re.compile(r"^3(\.\d{1,2}(\.\d{1,2})?)?$")  # "3": the newest Python 3 envd builds
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


class _Parser(RequirementsSection):
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

    # -------------------------------------------------------- the document

    def parse(self, text: str) -> Spec:
        root = compose(text, self.source)
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
                f"expected a mapping of settings at the top, found {node_kind(root)}",
                root,
                "(top)",
                hint="see `envctl init --list` for examples",
            )
        fields = self.mapping(root, "", KEYS)
        values = {key: value for key, (_, value) in fields.items()}
        version = self.version(values.get("version"))
        python = self.python(values.get("python"))
        name = self.name(values.get("name"))
        base = self.base_for(values.get("base"), python, values.get("python"), root)
        read = self.requirements(values.get("requirements"), has_project="project" in values)
        project = self.project(values.get("project"))
        if project is not None:
            read = read.plus(project_requirements(self, self.is_file, values["project"], read))
        elif read.root_project is not None and "project" not in values:
            # `uv sync` installs the root project of a uv.lock that marks it editable; so
            # does envd (a virtual root, `[tool.uv] package = false`, is not installed).
            project = "editable"
            node = values["requirements"]
            read = read.plus(
                project_requirements(self, self.is_file, node, read, key="requirements")
            )
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
            python=python,
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
            project=project,
            members=read.members,
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
                f"unsupported schema version {show(value)}; "
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
                    f"{show(text)} is not a package name",
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
                f"expected editable or install, found {node_kind(node)}",
                node,
                "project",
                hint="`project: editable` installs the project itself, live at /workspace",
            )
        if self.is_file is not None and not (
            self.is_file("pyproject.toml") or self.is_file("setup.py") or self.is_file("setup.cfg")
        ):
            raise self.error(
                "`project:` installs the project itself, but it has no pyproject.toml, setup.py "
                "or setup.cfg",
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
            return check_requirement(text)
        except BadRequirement as exc:
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
                requirement = check_requirement(text, allow_url=True)
            except BadRequirement as exc:
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
                        node_line(item),
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
                or node_tag(value) == "null"
                or node_tag(value) not in ("str", "int", "float", "bool", "timestamp")
            ):
                raise self.error(
                    f"expected a string value, found {node_kind(value)}",
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
                fields = self.mapping(item, path, SETUP_KEYS)
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
        fields = self.mapping(node, "runs", RUNS_KEYS)
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
            if isinstance(item, yaml.ScalarNode) and node_tag(item) == "str":
                text = item.value.strip()
                hint = "e.g. `ports: [8888]`"
                if _DECIMAL.match(text):
                    hint = f"write the number without quotes: `{text}`"
                elif re.match(r"^[0-9]{1,5}/(tcp|udp)$", text, re.IGNORECASE):
                    hint = f"envd publishes TCP ports as numbers: `{text.split('/')[0]}`"
                elif re.match(r"^[0-9]{1,5}:[0-9]{1,5}$", text):
                    hint = "envd publishes a port on the same host port: list the number only"
                raise self.error(
                    f"expected a port number, found {node_kind(item)}", item, path, hint=hint
                )
            value = self.scalar(item, path, "int", "a port number")
            if not _DECIMAL.match(value):
                meant = yaml_int(cast(yaml.ScalarNode, item))
                hint = "write the port as a plain decimal number, e.g. `8888`"
                if meant is not None:
                    hint = f"YAML reads `{value}` as {meant}; write the port in decimal"
                raise self.error(
                    f"`{show(value)}` is not a plain decimal port number", item, path, hint=hint
                )
            port = int(value) if len(value) <= 6 else 0
            if not 1 <= port <= 65535:
                raise self.error(f"port {show(value)} is out of range 1-65535", item, path)
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
