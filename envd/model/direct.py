"""Direct URL requirements (`name @ https://host/path/file.whl`): pure helpers, no I/O.

A direct URL requirement is locked like an index package, by exactly one file: the lock
records its URL (without a `#sha256=` fragment), the version its file name carries and the
sha256 of its bytes; the build installs that file from a verified local copy, hash-checked.
A wheel is taken as it is; an sdist is built only when `build: {from_source: [name]}` names
it, as for sdists from an index.

A git requirement (`name @ git+https://host/repo@REF`) is locked to an exact commit (a branch
or tag resolved when locking) and, since it is built from source, only with from_source: the
lock records `git+https://host/repo@<commit>`, the static version of its pyproject.toml, and
the sha256 of an sdist envd makes of that commit's tree (`git archive`, in a gzip stream of
stored blocks, so the same commit gives the same bytes anywhere); that file is what the build
installs, hash-checked, with no git in the image.
"""

from __future__ import annotations

import re
import struct
import tomllib
import zlib
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from packaging.requirements import Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from envd.model import safenames

# Where the packages step sees the files of direct URL packages (inside its run dir at /mnt).
DIRECT_DIR = "/mnt/direct"
_SHA256_FRAGMENT = re.compile(r"(?:^|&)sha256=([0-9a-fA-F]{64})(?:&|$)")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")


class DirectUrlProblem(ValueError):
    """A direct URL requirement envd cannot lock: `message` and `hint` say why and what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Artifact:
    """What a direct URL's file name says: a wheel or an sdist, of which project and version."""

    filename: str
    name: str  # canonical
    version: str
    wheel: bool


def without_fragment(url: str) -> str:
    """The URL as the lock records it: no `#sha256=...` (the lock has the digest itself)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def fragment_sha256(url: str) -> str | None:
    """The digest a `#sha256=<hex>` fragment names (lowercase hex), if any."""
    match = _SHA256_FRAGMENT.search(urlsplit(url).fragment)
    return match[1].lower() if match else None


def filename_of(url: str) -> str:
    """The file name at the end of the URL's path (percent-decoded)."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def artifact_of(url: str, requirement_name: str) -> Artifact:
    """The wheel or sdist a URL names, checked against the requirement's name."""
    filename = filename_of(url)
    if not safenames.is_component(filename):
        raise DirectUrlProblem(
            f"the URL's file name {filename!r} is not a plain file name (it holds a path "
            "separator, `..` or a control character)",
            hint="name a wheel or sdist file by its own name at the end of the URL",
        )
    name = canonicalize_name(requirement_name)
    wheel = filename.endswith(".whl")
    try:
        if wheel:
            project, version, _build, _tags = parse_wheel_filename(filename)
        else:
            project, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        raise DirectUrlProblem(
            f"`{filename or url}` is neither a wheel (`name-version-tags.whl`) nor an sdist "
            "(`name-version.tar.gz` or `.zip`), so envd cannot tell its version",
            "point the URL at a wheel or sdist file with a standard file name",
        ) from None
    if project != name:
        raise DirectUrlProblem(
            f"the URL names {filename}, a file of {project}, not of {name}",
            f"write `{project} @ {without_fragment(url)}`, or fix the URL",
        )
    return Artifact(filename=filename, name=name, version=str(version), wheel=wheel)


def check_url(requirement: str) -> str:
    """The URL of a direct URL requirement envd can lock, or DirectUrlProblem saying why not."""
    url = Requirement(requirement).url or ""
    lowered = url.lower()
    if lowered.startswith(_VCS_PREFIXES):
        repo, _ref = git_parts(url)
        if "@" in urlsplit(repo).netloc:
            raise DirectUrlProblem(
                "a VCS URL must not hold credentials (envd.yaml and envd.lock are committed)",
                "give git its credentials instead (a credential helper or ~/.netrc)",
            )
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DirectUrlProblem(
            f"`{requirement}` is a local path requirement, which envd does not support",
            "name a released version from an index, or an https:// URL of a wheel",
        )
    if "@" in parts.netloc:
        raise DirectUrlProblem(
            "a direct URL must not hold credentials (envd.yaml and envd.lock are committed)",
            "serve the file without credentials in the URL, or put it on an index in `indexes:`",
        )
    return url


def is_vcs(url: str) -> bool:
    return url.lower().startswith(_VCS_PREFIXES)


def git_parts(url: str) -> tuple[str, str]:
    """(repository URL, ref) of `git+https://host/repo@ref#fragment`; ref "HEAD" when none.

    Only git over http(s) is locked: a DirectUrlProblem says so for others."""
    lowered = url.lower()
    if not lowered.startswith(("git+https://", "git+http://")):
        raise DirectUrlProblem(
            f"`{url}` is a VCS requirement envd cannot lock: only git over https "
            "(`name @ git+https://host/repo@COMMIT`) is locked to an exact commit",
            "use `git+https://`, or build a wheel and name it by URL "
            "(`name @ https://host/name-1.0-py3-none-any.whl`)",
        )
    parts = urlsplit(url[len("git+") :])
    path, ref = parts.path, "HEAD"
    if "@" in path:
        path, ref = path.rsplit("@", 1)
    if not ref:
        raise DirectUrlProblem(f"`{url}` names an empty ref after `@`", "write `@COMMIT`")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")), ref


def is_commit(ref: str) -> bool:
    return _COMMIT.fullmatch(ref) is not None


def git_locked_url(repo: str, commit: str) -> str:
    """The lock's URL of a git requirement: the repository at the exact commit."""
    return f"git+{repo}@{commit}"


def vcs_problem(url: str) -> DirectUrlProblem:
    """A VCS requirement without `build: {from_source: [...]}`: it is built from source."""
    return DirectUrlProblem(
        f"`{url}` is a VCS requirement, which is built from source, and envd builds nothing "
        "from source unless envd.yaml says so (it locks a VCS requirement only to an exact "
        "commit, a branch or tag resolved to its commit when locking)",
        "",
    )


def static_version(pyproject: str) -> str | None:
    """`[project] version` of a pyproject.toml when written there (not `dynamic`)."""
    try:
        project = tomllib.loads(pyproject).get("project", {})
    except tomllib.TOMLDecodeError:
        return None
    version = project.get("version") if isinstance(project, dict) else None
    return version if isinstance(version, str) and version else None


def sdist_filename(name: str, version: str) -> str:
    """A PEP 625 sdist file name (what uv requires of a local source archive)."""
    return f"{name.replace('-', '_')}-{version}.tar.gz"


def stored_gzip(data: bytes) -> bytes:
    """`data` as a gzip file of stored (uncompressed) deflate blocks: the same bytes on every
    machine, whatever its zlib (compressed deflate output differs between implementations)."""
    out = bytearray(b"\x1f\x8b\x08\x00" + b"\x00" * 4 + b"\x00\xff")  # no mtime, no name
    blocks = [data[i : i + 0xFFFF] for i in range(0, len(data), 0xFFFF)] or [b""]
    for i, block in enumerate(blocks):
        final = 1 if i == len(blocks) - 1 else 0
        out += struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


def install_requirement(name: str, url: str, version: str = "") -> str:
    """The packages step's line for a direct URL package: its verified copy, by file name."""
    return f"{name} @ file://{DIRECT_DIR}/{quote(local_filename(name, url, version))}"


def local_filename(name: str, url: str, version: str) -> str:
    """The file name of a direct URL package's verified copy (a git one: its sdist's),
    checked to be one plain file name: the URL and version come from envd.lock, which a
    colleague (or anyone who can push to the repository) wrote, and `%2F` or `..` in them
    must never become a path on this machine."""
    filename = sdist_filename(name, version) if is_vcs(url) else filename_of(url)
    return safenames.component(filename, f"envd.lock: the file name of {name}'s URL {url}")


def with_url(requirement: str, url: str) -> str:
    """`requirement` (extras and marker kept) pointing at `url` instead."""
    parsed = Requirement(requirement)
    parsed.url = url
    return str(parsed)
