"""envd.lock as a PEP 751 pylock.toml, for installers other than envd (uv, pip).

Pure: no I/O. envd.lock pins each Python package to a version and the sha256 of every artifact
of that version, but not the artifacts' file names or URLs, and PEP 751 needs a `url` or `path`
for every wheel and sdist (a package without either is not valid). The caller therefore hands in
the files it knows (`ArtifactFile`: URL and sha256, e.g. from the index's PEP 691 JSON, see
`files_from_simple_json`); only files whose sha256 the lock pins are written, so the pylock never
allows an artifact the lock does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import tomli_w

from envd.errors import LockError
from envd.model.lockfile import LockFile, PythonPackage, Target

PYPI_SIMPLE = "https://pypi.org/simple"
CREATED_BY = "envd"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SDIST_SUFFIXES = (".tar.gz", ".zip")


@dataclass(frozen=True)
class ArtifactFile:
    """One distribution file of a package version, as an index lists it."""

    url: str
    sha256: str  # hex, with or without the "sha256:" prefix
    size: int | None = None
    upload_time: datetime | None = None

    @property
    def filename(self) -> str:
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])

    @property
    def digest(self) -> str:
        """The sha256 as the lock writes it: "sha256:<hex>"."""
        return "sha256:" + self.sha256.removeprefix("sha256:").lower()

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith(_SDIST_SUFFIXES)


def files_from_simple_json(page: Mapping[str, Any], page_url: str) -> tuple[ArtifactFile, ...]:
    """The files of a PEP 691 JSON project page (`Accept: application/vnd.pypi.simple.v1+json`).

    Relative file URLs are resolved against `page_url`; files without a sha256 are skipped.
    """
    out: list[ArtifactFile] = []
    for entry in page.get("files", ()):
        if not isinstance(entry, Mapping):
            continue
        url, hashes = entry.get("url"), entry.get("hashes")
        sha256 = hashes.get("sha256") if isinstance(hashes, Mapping) else None
        if not isinstance(url, str) or not isinstance(sha256, str):
            continue
        size = entry.get("size")
        out.append(
            ArtifactFile(
                url=urljoin(page_url, url),
                sha256=sha256,
                size=size if type(size) is int else None,
                upload_time=_parse_time(entry.get("upload-time")),
            )
        )
    return tuple(out)


def missing_files(lock: LockFile, files: Iterable[ArtifactFile]) -> tuple[str, ...]:
    """ "name==version" for each locked package none of whose pinned artifacts is in `files`."""
    known = _by_digest(files)
    return tuple(
        f"{p.name}=={p.version}"
        for p in _sorted(lock.python)
        if not any(h in known for h in p.hashes)
    )


def render_pylock(
    lock: LockFile, files: Iterable[ArtifactFile] = (), *, partial: bool = False
) -> str:
    """The pylock.toml text for `lock`; the same lock and files always give the same bytes.

    Raises LockError naming the packages that have no known file (see `missing_files`), unless
    `partial`: then those packages are left out and listed under `[tool.envd] missing`, so the
    file is still valid PEP 751 but says plainly that it is incomplete.
    """
    known = _by_digest(files)
    missing = missing_files(lock, known.values())
    if missing and not partial:
        raise LockError(
            "cannot write pylock.toml: no file name or URL is known for "
            + ", ".join(missing)
            + " (envd.lock pins only the sha256 of each artifact)",
            hint="pass the index's file list for these packages (files_from_simple_json)",
        )
    document: dict[str, Any] = {"lock-version": "1.0"}
    if environments := _environments(lock.target):
        document["environments"] = environments
    if lock.target.python_version:
        document["requires-python"] = f"=={lock.target.python_version}"
    document["created-by"] = CREATED_BY
    document["packages"] = [
        _package(p, known) for p in _sorted(lock.python) if f"{p.name}=={p.version}" not in missing
    ]
    tool: dict[str, Any] = {"inputs-hash": lock.inputs_hash, "envd-version": lock.envd_version}
    if missing:
        tool["missing"] = list(missing)
    document["tool"] = {"envd": tool}
    return tomli_w.dumps(document)


def _package(package: PythonPackage, known: Mapping[str, ArtifactFile]) -> dict[str, Any]:
    files = sorted((known[h] for h in set(package.hashes) if h in known), key=lambda f: f.filename)
    entry: dict[str, Any] = {"name": package.name, "version": package.version}
    if not package.url:  # (a direct URL package's file names its URL, from no index)
        entry["index"] = package.index or PYPI_SIMPLE
    sdists = [f for f in files if f.is_sdist]
    if sdists:
        entry["sdist"] = _file(sdists[0])  # PEP 751 has room for one; the first by name
    wheels = [_file(f) for f in files if f.is_wheel]
    if wheels:
        entry["wheels"] = wheels
    return entry


def _file(artifact: ArtifactFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": artifact.filename}
    if artifact.upload_time is not None:
        entry["upload-time"] = artifact.upload_time.astimezone(UTC).replace(microsecond=0)
    entry["url"] = artifact.url
    if artifact.size is not None:
        entry["size"] = artifact.size
    entry["hashes"] = {"sha256": artifact.digest.removeprefix("sha256:")}
    return entry


def _environments(target: Target) -> list[str]:
    """One marker for the platform the lock was resolved for; none if it is not known."""
    platform = target.platform
    if not target.arch or not platform.startswith(("manylinux", "musllinux", "linux")):
        return []
    return [f"sys_platform == 'linux' and platform_machine == '{target.arch}'"]


def _by_digest(files: Iterable[ArtifactFile]) -> dict[str, ArtifactFile]:
    known: dict[str, ArtifactFile] = {}
    for artifact in files:
        if not _SHA256_HEX.fullmatch(artifact.digest.removeprefix("sha256:")):
            raise LockError(f"not a sha256 digest for {artifact.url}: {artifact.sha256!r}")
        if not (artifact.is_wheel or artifact.is_sdist):
            continue
        known.setdefault(artifact.digest, artifact)
    return known


def _sorted(packages: Sequence[PythonPackage]) -> list[PythonPackage]:
    return sorted(packages, key=lambda p: (p.name, p.version))


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
