"""Direct URL requirements (`name @ https://host/path/file.whl`): pure helpers, no I/O.

A direct URL requirement is locked like an index package, by exactly one file: the lock
records its URL (without a `#sha256=` fragment), the version its file name carries and the
sha256 of its bytes; the build installs that file from a verified local copy, hash-checked.
A wheel is taken as it is; an sdist is built only when `build: {from_source: [name]}` names
it, as for sdists from an index.
"""

from __future__ import annotations

import re
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
        raise vcs_problem(url)
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


def vcs_problem(url: str) -> DirectUrlProblem:
    """Why a VCS requirement is refused: envd locks one only to an exact commit, and installs
    only what a sha256 checks, which a checkout is not."""
    ref = url.rsplit("@", 1)[-1].split("#", 1)[0] if "@" in urlsplit(url).path else ""
    if not _COMMIT.fullmatch(ref):
        return DirectUrlProblem(
            f"`{url}` is a VCS requirement to "
            + (f"the ref `{ref}`" if ref else "no ref at all")
            + ": envd locks a VCS requirement only to an exact commit, and does not install "
            "VCS requirements yet (a checkout has no sha256 to check)",
            "build a wheel of the commit you want and name it by URL "
            "(`name @ https://host/name-1.0-py3-none-any.whl`), or use a release from an index",
        )
    return DirectUrlProblem(
        f"`{url}` is a VCS requirement: envd does not install VCS requirements yet, even at an "
        "exact commit (a checkout has no sha256 to check)",
        "build a wheel of that commit and name it by URL "
        "(`name @ https://host/name-1.0-py3-none-any.whl`), or use a release from an index",
    )


def install_requirement(name: str, url: str) -> str:
    """The packages step's line for a direct URL package: its verified copy, by file name."""
    return f"{name} @ file://{DIRECT_DIR}/{quote(filename_of(url))}"


def with_url(requirement: str, url: str) -> str:
    """`requirement` (extras and marker kept) pointing at `url` instead."""
    parsed = Requirement(requirement)
    parsed.url = url
    return str(parsed)
