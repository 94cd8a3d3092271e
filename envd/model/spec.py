"""envd.yaml, schema version 1: the typed model (this module) and its pure parser.

The parser is `spec_parser` (`parse_spec`, the document and `version`) with one method per
key in its parts, `spec_image` (name, base, python, cuda, gpu), `spec_sections` (the packages
and run keys) and `spec_requirements` (`requirements:` and the files it names, read through
`reqfiles`), all on `yamlnodes` (composition, depth limit, line numbers, typed accessors).

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
    env: {NAME: value}       # POSIX names; values without NUL or line breaks; PATH replaces
                             #   the image's PATH (Docker ENV), written in full: no `$PATH`
    setup: ["cmd", {run: "bash postBuild", files: [postBuild]}]
                             #   a word naming a project file must be in that step's `files:`
    start: start             # an executable project file every command runs through, as
                             #   `start CMD...` (repo2docker's start: it ends `exec "$@"`)
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

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

# One `setup:` entry; one class with the setup steps adopt reads from files.
from envd.model.reqfiles import SetupStep as SetupStep

SPEC_FILENAME = "envd.yaml"
LOCK_FILENAME = "envd.lock"
SCHEMA_VERSION = 1
# The image's PATH, the venv first; `env: {PATH: ...}` replaces it, as Docker's ENV PATH does.
VENV_BIN = "/opt/venv/bin"
DEFAULT_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_MAX = 128  # "envd/" + name must stay well inside Docker's 255-character repository limit

GpuMode = Literal["auto", "required", "none"]
ProjectMode = Literal["editable", "install"]


@dataclass(frozen=True)
class Base:
    """Exactly one of `image` (any image reference) or `debian` (a suite, built with mmdebstrap)."""

    image: str | None = None
    debian: str | None = None


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
    # Local packages in subfolders installed editable from the project's files (uv workspace
    # members, Pipfile `{path = "sub", editable = true}`), relative paths, in the order read.
    members: tuple[str, ...] = ()
    runs: Runs = field(default_factory=Runs)
    setup_steps: tuple[SetupStep, ...] = ()
    # `start:`: a project file (normalised relative path) that runs every command in the
    # environment as `start CMD...`; live from the project, so it is not part of the image.
    start: str | None = None
    # `build: {from_source: [...]}`: packages with no wheel for the target, built from their
    # sdists in this project's own build step (canonical names). Nothing else is ever built.
    from_source: tuple[str, ...] = ()
    # Exact pins (with hashes) from the files named in `requirements:`, in the order read.
    pins: tuple[FilePin, ...] = ()
    # Direct URL requirements of `packages` and requirements files, in the order written.
    direct: tuple[DirectUrl, ...] = ()
    # `project:` from a setup.py whose metadata is computed: the files it is computed from,
    # "relpath sha256:<hex>" (envd.model.spec_project); computed at lock in a container.
    computed: tuple[str, ...] = ()

    @property
    def all_requirements(self) -> tuple[str, ...]:
        """`packages` then `requirements`, in the order written."""
        return self.packages + self.requirements


# The keys of envd.yaml, in the order they are written.
KEYS = (
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
    "start",
    "ports",
    "project",
    "runs",
    "watch",
    "build",
)
BASE_KEYS = ("image", "debian")
RUNS_KEYS = ("params", "data", "outputs", "metrics")
SETUP_KEYS = ("run", "files")
# One path component of a Docker repository name (distribution/reference): Docker's, minus
# `-*` (ReDoS).
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_SEPARATOR = re.compile(r"^(?:[._]|__|-+)$")

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
    return name if NAME_PATTERN.match(name) else "project"
