"""Fingerprints: an exact, hashed description of an environment and of the host it ran on.

Pure. Each section is hashed as canonical JSON (sorted keys, UTF-8, compact separators, no
NaN), with the schema version inside the hashed payload; the root hash covers both sections.
Nothing time-, hostname- or host-path-dependent goes in.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from envd.errors import VerificationError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    detail: str = ""  # arch for Debian packages, RECORD sha256 for Python distributions


@dataclass(frozen=True)
class EnvironmentSection:
    base_digest: str
    os_release: dict[str, str]
    glibc: str
    arch: str
    debian_packages: tuple[Package, ...]
    python_version: str
    python_implementation: str
    python_build: str
    python_compiler: str
    python_packages: tuple[Package, ...]
    cuda_libraries: tuple[Package, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class HostGpu:
    model: str
    compute_capability: str
    memory_bytes: int


@dataclass(frozen=True)
class HostSection:
    cpu_model: str
    arch: str
    kernel: str
    engine_version: str
    gpus: tuple[HostGpu, ...] = ()
    driver_version: str = ""
    cuda_driver_version: str = ""


@dataclass(frozen=True)
class Fingerprint:
    environment: EnvironmentSection
    host: HostSection
    environment_hash: str = ""
    host_hash: str = ""
    root_hash: str = ""
    schema_version: int = SCHEMA_VERSION
    labels: dict[str, str] = field(default_factory=dict, compare=False)  # not hashed


def _check(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and infinities cannot be hashed canonically")
    if isinstance(value, dict):
        return {str(k): _check(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_check(v) for v in value]
    return value


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        _check(obj), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def section_hash(section: EnvironmentSection | HostSection) -> str:
    payload = {"schema_version": SCHEMA_VERSION, "section": asdict(section)}
    return "sha256:" + hashlib.sha256(canonical_json(payload)).hexdigest()


def root_hash(environment_hash: str, host_hash: str) -> str:
    payload = {"environment": environment_hash, "host": host_hash, "schema_version": SCHEMA_VERSION}
    return "sha256:" + hashlib.sha256(canonical_json(payload)).hexdigest()


def make_fingerprint(environment: EnvironmentSection, host: HostSection) -> Fingerprint:
    env_hash = section_hash(environment)
    host_hash = section_hash(host)
    return Fingerprint(environment, host, env_hash, host_hash, root_hash(env_hash, host_hash))


def environment_from_probe(
    probe: dict[str, Any], base_digest: str, env: dict[str, str]
) -> EnvironmentSection:
    python = probe.get("python", {})
    return EnvironmentSection(
        base_digest=base_digest,
        os_release={str(k): str(v) for k, v in sorted(probe.get("os_release", {}).items())},
        glibc=str(probe.get("glibc", "")),
        arch=str(probe.get("arch", "")),
        debian_packages=tuple(Package(n, v, a) for n, v, a in probe.get("debian_packages", [])),
        python_version=str(python.get("version", "")),
        python_implementation=str(python.get("implementation", "")),
        python_build=" ".join(str(x) for x in python.get("build", [])),
        python_compiler=str(python.get("compiler", "")),
        python_packages=tuple(Package(n, v, d) for n, v, d in probe.get("python_packages", [])),
        cuda_libraries=tuple(Package(n, v) for n, v in probe.get("cuda_libraries", [])),
        env=dict(sorted(env.items())),
    )


# ---------------------------------------------------------------- the file format


def to_dict(fp: Fingerprint) -> dict[str, Any]:
    return {
        "schema_version": fp.schema_version,
        "environment": asdict(fp.environment),
        "host": asdict(fp.host),
        "environment_hash": fp.environment_hash,
        "host_hash": fp.host_hash,
        "root_hash": fp.root_hash,
    }


def dumps(fp: Fingerprint) -> str:
    """The fingerprint file users commit or attach to a result."""
    return json.dumps(to_dict(fp), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _packages(items: Any) -> tuple[Package, ...]:
    return tuple(Package(**item) for item in items)


def from_dict(data: dict[str, Any], source: str) -> Fingerprint:
    try:
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {data.get('schema_version')!r}")
        e = dict(data["environment"])
        environment = EnvironmentSection(
            **{
                **e,
                "debian_packages": _packages(e["debian_packages"]),
                "python_packages": _packages(e["python_packages"]),
                "cuda_libraries": _packages(e["cuda_libraries"]),
            }
        )
        h = dict(data["host"])
        host = HostSection(**{**h, "gpus": tuple(HostGpu(**g) for g in h["gpus"])})
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(
            f"{source} is not a valid envd fingerprint: {exc}",
            hint="make one with `envctl fingerprint PROJECT --output FILE`",
        ) from None
    fp = make_fingerprint(environment, host)
    for name in ("environment_hash", "host_hash", "root_hash"):
        if data.get(name) != getattr(fp, name):
            raise VerificationError(
                f"{source}: {name} does not match the content (recorded {data.get(name)}, "
                f"computed {getattr(fp, name)}); the file was changed after it was made",
            )
    return fp


def loads(text: str, source: str) -> Fingerprint:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise VerificationError(f"{source} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise VerificationError(f"{source} is not an envd fingerprint (expected an object)")
    return from_dict(data, source)
