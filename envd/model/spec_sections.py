"""envd.yaml's keys that say what goes in and how it runs: `build`, `project`, `system`,
`packages`, `constraints`, `indexes` (PackageSections); `env`, `setup`, `start`, `runs`,
`ports` (RunSections). `spec_parser._Parser` is one of each."""

import re
import shlex
from typing import cast

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
from envd.model import direct as direct_urls
from envd.model import safenames
from envd.model.spec import (
    DEFAULT_PATH,
    RUNS_KEYS,
    SETUP_KEYS,
    DirectUrl,
    IsFile,
    ProjectMode,
    Runs,
    SetupStep,
)
from envd.model.spec_requirements import (
    BadRequirement,
    check_requirement,
)
from envd.model.yamlnodes import (
    Nodes,
    node_kind,
    node_line,
    node_tag,
    show,
    yaml_int,
)

_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$")
_DECIMAL = re.compile(r"^[0-9]+$")
_PATH_VAR = re.compile(r"\$(?:PATH\b|\{PATH\})")


class PackageSections(Nodes):
    """`build`, `project`, `system`, `packages`, `constraints`, `overrides`, `indexes`."""

    is_file: IsFile | None

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


class RunSections(Nodes):
    """`env`, `setup`, `start`, `runs`, `ports`."""

    project_dir: str
    is_file: IsFile | None

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
            if key == "PATH" and _PATH_VAR.search(text):
                raise self.error(
                    "envd.yaml does not expand variables, so `$PATH` would stay as written; "
                    "PATH replaces the image's PATH, as Docker's ENV PATH does",
                    value,
                    "env.PATH",
                    hint=f"write it in full: `PATH: {_PATH_VAR.sub(DEFAULT_PATH, text)}`",
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
                self.check_step_words(run, files, fields["run"][1], f"{path}.run")
                steps.append(SetupStep(run=run, files=files))
            else:
                run = self.string(item, path)
                self.check_step_words(run, (), item, path)
                steps.append(SetupStep(run=run))
        return tuple(steps)

    def check_step_words(
        self, run: str, files: tuple[str, ...], node: yaml.Node, path: str
    ) -> None:
        """A word of the command that names a project file the step does not list fails at
        build ("No such file": a step sees only its `files:`), so it is refused here."""
        if self.is_file is None:
            return
        try:
            words = shlex.split(run, comments=True)
        except ValueError:  # (unbalanced quotes: the shell reports it at build)
            return
        for word in words:
            if word.startswith(("-", "/", "~")) or "$" in word or word.endswith("/"):
                continue
            try:
                relpath = safenames.relative(word, "a setup command's word").as_posix()
            except safenames.UnsafeName:
                continue
            listed = relpath in files or any(
                f.endswith("/") and relpath.startswith(f) for f in files
            )
            if listed or not self.is_file(relpath):
                continue
            listed_too = ", ".join([*files, relpath])
            raise self.error(
                f"the command names the project file `{relpath}`, which is not in the step's "
                "`files:`; a setup step sees only the files it lists (at build it would fail "
                'with "No such file")',
                node,
                path,
                hint=f"list it: `- run: {run}` with `files: [{listed_too}]` under it",
            )

    def start(self, node: yaml.Node | None) -> str | None:
        """`start:`: a project file that every command runs through."""
        if node is None:
            return None
        relpath = self.relpath(node, "start", file=True)
        try:
            safenames.relative(relpath, "`start:`")
        except safenames.UnsafeName as exc:
            raise self.error(str(exc), node, "start") from None
        if self.is_file is not None and not self.is_file(relpath):
            raise self.error(
                f"`{relpath}` is not a file in the project",
                node,
                "start",
                hint="name an executable script in the project, e.g. `start: start`",
            )
        return relpath

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
