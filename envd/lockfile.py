"""envd.lock: the typed model, its deterministic serialisation, and staleness checks.

Pure: no I/O beyond what callers pass in. The file is JSON with sorted keys and a trailing
newline, so the same inputs always give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCK_VERSION = 1


@dataclass(frozen=True)
class DebianPackage:
    name: str
    version: str
    arch: str = ""


@dataclass(frozen=True)
class PythonPackage:
    name: str  # canonical (PEP 503 normalised) name
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>", sorted
    index: str = ""  # index URL the artifacts come from; "" means PyPI


@dataclass(frozen=True)
class BaseLock:
    """How the base image is pinned.

    kind == "debian": built with mmdebstrap; `suite`, `mirror`, `packages` (the exact set in the
    tarball) and `tarball_sha256` (bit-identical with SOURCE_DATE_EPOCH) pin it.
    kind == "image": `reference` as written, `digest` the repo digest or image ID it resolved to.
    """

    kind: str
    reference: str = ""
    digest: str = ""
    suite: str = ""
    mirror: str = ""
    tarball_sha256: str = ""
    packages: tuple[DebianPackage, ...] = ()


@dataclass(frozen=True)
class Target:
    """What packages are resolved for, read from inside the base image."""

    python_version: str  # exact, e.g. "3.11.2"
    platform: str  # platform tag, e.g. "manylinux_2_36_x86_64"
    glibc: str  # e.g. "2.36"
    arch: str  # e.g. "x86_64"
    accelerator: str = "cpu"  # "cpu" or a CUDA variant such as "cu124"
    min_driver: str = ""  # minimum NVIDIA driver for `accelerator`, "" for cpu


@dataclass(frozen=True)
class Inputs:
    """The normalised spec inputs a lock was made from (hashed for a fast staleness check)."""

    base: str  # "debian:bookworm" or "image:python:3.11-slim"
    python: str
    system: tuple[str, ...]
    requirements: tuple[str, ...]  # packages + requirements file lines, normalised, in order
    indexes: tuple[str, ...]
    cuda: str
    env: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]


@dataclass(frozen=True)
class LockFile:
    envd_version: str
    uv_version: str
    inputs: Inputs
    inputs_hash: str  # "sha256:<hex>" of the canonical inputs
    target: Target
    base: BaseLock
    system: tuple[DebianPackage, ...]  # system packages (and their deps) at exact versions
    python: tuple[PythonPackage, ...]  # sorted by name
    shared_image: str = ""  # "registry/repo@sha256:..." when pinned by `share image --pin`
    lock_version: int = LOCK_VERSION
