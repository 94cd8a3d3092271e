"""The requirements section of envd.yaml: requirement strings checked as envd takes them,
and the files named in `requirements:` read through `reqfiles` into the spec."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envd.errors import SpecError
from envd.model import direct as direct_urls
from envd.model import reqfiles
from envd.model.spec import (
    DirectUrl,
    FilePin,
    FileRefused,
    ReadText,
)
from envd.model.yamlnodes import (
    Nodes,
    node_kind,
    node_tag,
)

_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
_ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2", ".tar.xz", ".tar")


def direct_reference(text: str) -> str | None:
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


DIRECT_HINT = (
    "envd pins every package by version and sha256: name a released version (e.g. "
    "`pkg==1.2`, with its index under `indexes:` if it is not on PyPI), or, in `packages:` or "
    "a requirements file, a file by URL (`pkg @ https://host/pkg-1.2-py3-none-any.whl`)"
)


def check_requirement(text: str, *, allow_url: bool = False) -> str:
    """The normalised requirement, or BadRequirement (message and hint).

    `allow_url`: a direct URL requirement (`name @ https://...`) is taken, locked by URL and
    sha256; VCS requirements and local paths are refused either way, saying why."""
    kind = direct_reference(text)
    if kind is not None and allow_url and kind.startswith(("a URL", "a VCS")):
        try:
            direct_urls.check_url(text)
        except InvalidRequirement:
            pass  # said below
        except direct_urls.DirectUrlProblem as exc:
            raise BadRequirement(exc.message, exc.hint) from None
        except ValueError as exc:  # urlsplit: "Invalid IPv6 URL" (a `[` in the host)
            raise BadRequirement(
                f"`{text}` names a URL that cannot be parsed ({exc})",
                "name a file by its https URL (`pkg @ https://host/pkg-1.2-py3-none-any.whl`)",
            ) from None
        else:
            return str(Requirement(text))
    if kind is not None:
        raise BadRequirement(f"`{text}` is {kind}, which envd does not support yet", DIRECT_HINT)
    try:
        return str(Requirement(text))
    except InvalidRequirement as exc:
        raise BadRequirement(
            f"`{text}` is not a valid requirement: {exc}",
            "PEP 508, e.g. `numpy>=1.26` or `pandas==2.2.2`",
        ) from None


REQUIREMENT_FORMATS = (
    "requirements",
    "pyproject",
    "uv.lock",
    "Pipfile.lock",
    "Pipfile",
    "pylock",
)


def requirements_format(relpath: str) -> str:
    """What a file named in `requirements:` is, by its name (else a pip requirements file)."""
    name = posixpath.basename(relpath)
    if name == "pyproject.toml":
        return "pyproject"
    if name in ("uv.lock", "Pipfile.lock", "Pipfile"):
        return name
    if name == "pylock.toml" or re.fullmatch(r"pylock\.[^.]+\.toml", name):
        return "pylock"
    return "requirements"


@dataclass(frozen=True)
class RequirementsRead:
    """What the files named in `requirements:` say, together."""

    files: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    pins: tuple[FilePin, ...] = ()
    indexes: tuple[str, ...] = ()
    direct: tuple[DirectUrl, ...] = ()
    # A uv.lock whose root package is `source = { editable = "." }`: `uv sync` installs the
    # project itself, and so does envd when envd.yaml does not say `project:`. The file
    # that says so, for the messages (None: no file installs the project).
    root_project: str | None = None
    members: tuple[str, ...] = ()  # local packages in subfolders installed editable
    # those of `members` no lock file pins the dependencies of (a Pipfile's `{path = "sub"}`):
    # their own dependencies are read from their metadata and locked (spec_project)
    unpinned_members: tuple[str, ...] = ()
    # setup.py's metadata is computed (at lock, by the legacy backend in a container): the
    # "relpath sha256:<hex>" of the files it is computed from (envd.model.spec_project)
    computed: tuple[str, ...] = ()

    def plus(self, other: RequirementsRead) -> RequirementsRead:
        return RequirementsRead(
            root_project=self.root_project or other.root_project,
            members=self.members + tuple(m for m in other.members if m not in self.members),
            unpinned_members=self.unpinned_members
            + tuple(m for m in other.unpinned_members if m not in self.unpinned_members),
            files=self.files + tuple(f for f in other.files if f not in self.files),
            requirements=self.requirements + other.requirements,
            constraints=self.constraints + other.constraints,
            pins=self.pins + other.pins,
            indexes=self.indexes + tuple(i for i in other.indexes if i not in self.indexes),
            direct=self.direct + other.direct,
            computed=self.computed or other.computed,
        )


def _line_naming(text: str, name: str) -> int | None:
    """The first line of a TOML or JSON lock that names package `name` (any spelling)."""
    pattern = "[-_.]+".join(re.escape(part) for part in canonicalize_name(name).split("-"))
    found = re.compile(rf"""(name\s*=\s*["']|^\s*"){pattern}["']""", re.IGNORECASE)
    for number, line in enumerate(text.splitlines(), start=1):
        if found.search(line):
            return number
    return None


class BadRequirement(Exception):
    """A requirement envd does not take: the message and hint, said where it was written."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class RequirementsSection(Nodes):
    """`requirements:` and the files it names; `spec_parser._Parser` is one of these."""

    project_dir: str
    read_text: ReadText | None

    def requirements(
        self, node: yaml.Node | None, *, has_project: bool = False
    ) -> RequirementsRead:
        if node is None:
            return RequirementsRead()
        if isinstance(node, yaml.SequenceNode):
            named = [
                (self.relpath(item, f"requirements[{i}]", file=True), item, f"requirements[{i}]")
                for i, item in enumerate(node.value)
            ]
        elif isinstance(node, yaml.ScalarNode) and node_tag(node) == "str":
            named = [(self.relpath(node, "requirements", file=True), node, "requirements")]
        else:
            raise self.error(
                f"expected a file name or a list of file names, found {node_kind(node)}",
                node,
                "requirements",
                hint="`requirements: requirements.txt` or `requirements: [a.txt, b.txt]`",
            )
        files: dict[str, None] = {}
        for relpath, item, path in named:
            if relpath in files:
                raise self.error(f"`{relpath}` is listed twice", item, path)
            files[relpath] = None
        out = RequirementsRead(files=tuple(files))
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
    ) -> RequirementsRead:
        """One file named in `requirements:`, read as what its name says it is."""
        kind = requirements_format(relpath)
        if kind == "requirements":
            return self.pip_requirements(relpath, text, item, path, has_project)
        parsed = reqfiles.PARSERS[kind](text, relpath, root=self.project_dir)
        source = self.absolute(relpath)
        by_name: dict[str, list[str]] = {}
        for requirement in parsed.requirements:
            line = _line_naming(text, Requirement(requirement).name)
            kind_of = direct_reference(requirement)
            if kind_of is not None:
                raise SpecError(
                    f"`{requirement}` is {kind_of}, which envd does not support yet",
                    file=source,
                    line=line,
                    hint=DIRECT_HINT,
                )
            written = by_name.setdefault(str(canonicalize_name(Requirement(requirement).name)), [])
            if requirement not in written:
                written.append(requirement)
        requirements: list[str] = []
        for package, written in by_name.items():
            # A lock resolved for several platforms may pin a package twice (by marker):
            # then the name is required and the resolver picks one of the pinned versions.
            requirements.append(check_requirement(written[0] if len(written) == 1 else package))
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
            requirements = [check_requirement(r) for r in parsed.direct]
            constraints = tuple(
                f"{package}=={written[0].split('==', 1)[1]}"
                for package, written in by_name.items()
                if len(written) == 1 and "==" in written[0]
            )
        return RequirementsRead(
            requirements=tuple(requirements),
            constraints=constraints,
            pins=pins,
            indexes=self.file_indexes(parsed, text, source),
            root_project=relpath if kind == "uv.lock" and parsed.project == "editable" else None,
            members=parsed.members,
            unpinned_members=parsed.members if kind == "Pipfile" else (),
        )

    def file_indexes(self, parsed: reqfiles.Parsed, text: str, source: str) -> tuple[str, ...]:
        for url in parsed.indexes:
            netloc = url.split("://", 1)[-1].split("/", 1)[0]
            if "@" in netloc:
                raise SpecError(
                    "an index URL must not hold credentials (envd.yaml and envd.lock are "
                    "committed)",
                    file=source,
                    line=reqfiles.line_of(text, netloc),
                    hint="give credentials to uv instead: ~/.netrc or UV_INDEX_<NAME>_PASSWORD",
                )
        return parsed.indexes

    def pip_requirements(
        self, relpath: str, text: str, item: yaml.Node, path: str, has_project: bool
    ) -> RequirementsRead:
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
                requirements.append(check_requirement(requirement, allow_url=True))
            except BadRequirement as bad:
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
                constraints.append(check_requirement(constraint))
            except BadRequirement as bad:
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
        return RequirementsRead(
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
            raw = next((ln for n, ln in reqfiles.logical_lines(text) if n == exc.line), None)
            if raw is not None:
                requirement = re.split(r"\s--?[A-Za-z]", reqfiles.COMMENT.sub("", raw))[0]
                kind = direct_reference(requirement.strip()) if requirement.strip() else None
                if kind is not None:
                    return SpecError(
                        f"`{requirement.strip()}` is {kind}, which envd does not support yet",
                        file=exc.file,
                        line=exc.line,
                        hint=DIRECT_HINT,
                    )
        return exc
