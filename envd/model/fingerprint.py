"""Fingerprints: an exact, hashed description of an environment and of the host it ran on.

Pure. Each section is hashed as canonical JSON (sorted keys, UTF-8, compact separators, no
NaN), with the schema version inside the hashed payload; the root hash covers both sections.
Nothing time-, hostname- or host-path-dependent goes in.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from envd.errors import VerificationError
from envd.model import content, inventory
from envd.model.content import Manifest

SCHEMA_VERSION = 2  # 2: read from the image's bytes, with the content hash of every file


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
    python_packages: tuple[Package, ...]
    cuda_libraries: tuple[Package, ...]
    env: dict[str, str]
    content_hash: str = ""  # every file's path, mode and sha256 (envd.model.content)
    files: int = 0  # how many entries the content hash covers


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


CUDA_LIBS = ("libcudart", "libcudnn", "libnccl", "libcublas")
_DPKG_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "i686", "ppc64el": "ppc64le"}


def environment_from_manifest(
    manifest: Manifest, base_digest: str, env: dict[str, str], venv: str
) -> EnvironmentSection:
    """The environment section, read from the image's files alone (nothing in it is run)."""
    os_release = content.key_values(manifest, "/etc/os-release") or content.key_values(
        manifest, "/usr/lib/os-release"
    )
    debs = inventory.debian_packages(manifest)
    libc = next((d for d in debs if d.name == "libc6"), None)
    pyvenv = content.key_values(manifest, f"{venv}/pyvenv.cfg")
    python_version = pyvenv.get("version_info") or pyvenv.get("version") or _debian_python(debs)
    return EnvironmentSection(
        base_digest=base_digest,
        os_release={
            k: v
            for k, v in sorted(os_release.items())
            if k in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")
        },
        glibc=_upstream(libc.version).split("+")[0] if libc else "",
        arch=_DPKG_ARCH.get(libc.arch, libc.arch) if libc else "",
        debian_packages=tuple(Package(d.name, d.version, d.arch) for d in debs),
        python_version=_three_part(python_version),
        python_implementation=pyvenv.get("implementation", "CPython" if python_version else ""),
        python_packages=_distributions(manifest, venv),
        cuda_libraries=_cuda_libraries(manifest),
        env=dict(sorted(env.items())),
        content_hash=content.content_hash(manifest),
        files=len(manifest.entries),
    )


def _upstream(version: str) -> str:
    """A Debian version's upstream part: "2.36-9+deb12u4" -> "2.36"."""
    version = version.split(":", 1)[-1]
    return version.rsplit("-", 1)[0] if "-" in version else version


def _three_part(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts[:3]) if len(parts) >= 3 else version


def _debian_python(debs: list[inventory.DebianPackage]) -> str:
    """The version of the newest pythonX.Y Debian package (a venv-less image)."""
    found = sorted(
        (d for d in debs if d.name.startswith("python3.") and d.name[8:].isdigit()),
        key=lambda d: int(d.name[8:]),
    )
    return _upstream(found[-1].version) if found else ""


def _distributions(manifest: Manifest, venv: str) -> tuple[Package, ...]:
    """Python distributions (name canonicalised, version, sha256 of RECORD), venv first."""
    seen: dict[str, Package] = {}
    for dist in sorted(
        inventory.python_distributions(manifest), key=lambda d: not d.path.startswith(venv + "/")
    ):
        key = re.sub(r"[-_.]+", "-", dist.name).lower()
        if not key or key in seen:
            continue
        record = manifest.entries.get(f"{dist.path}/RECORD")
        seen[key] = Package(key, dist.version, record.sha256 if record else "")
    return tuple(seen[k] for k in sorted(seen))


def _cuda_libraries(manifest: Manifest) -> tuple[Package, ...]:
    found: set[tuple[str, str]] = set()
    for path in manifest.entries:
        base = path.rsplit("/", 1)[-1]
        for lib in CUDA_LIBS:
            if base.startswith(lib + ".so"):
                found.add((lib, base[len(lib) + 4 :]))
    return tuple(Package(name, version) for name, version in sorted(found))


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


# ------------------------------------------------------------ diff

PACKAGE_FIELDS = ("debian_packages", "python_packages", "cuda_libraries")


@dataclass(frozen=True)
class Change:
    section: str  # "environment" or "host"
    field: str
    kind: str  # "added", "removed", "changed"
    name: str = ""  # package name; "" for scalar fields
    old: str = ""
    new: str = ""


@dataclass(frozen=True)
class FingerprintDiff:
    changes: tuple[Change, ...]
    environment_identical: bool
    host_identical: bool

    @property
    def identical(self) -> bool:
        return self.environment_identical and self.host_identical


def _package_changes(
    section: str, name: str, old: tuple[Package, ...], new: tuple[Package, ...]
) -> list[Change]:
    a = {p.name: p for p in old}
    b = {p.name: p for p in new}
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            out.append(Change(section, name, "removed", key, a[key].version, ""))
        elif key not in a:
            out.append(Change(section, name, "added", key, "", b[key].version))
        elif a[key].version != b[key].version:
            out.append(Change(section, name, "changed", key, a[key].version, b[key].version))
        elif a[key].detail != b[key].detail:
            # Same version, different files (e.g. a rebuilt wheel or files changed by hand).
            out.append(
                Change(
                    section,
                    name,
                    "changed",
                    key,
                    f"{a[key].version} ({a[key].detail[:12]})",
                    f"{b[key].version} ({b[key].detail[:12]})",
                )
            )
    return out


def _scalars(
    section: str, old: dict[str, Any], new: dict[str, Any], prefix: str = ""
) -> list[Change]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            out += _scalars(section, a or {}, b or {}, f"{path}.")
        elif a != b:
            kind = "added" if a is None else "removed" if b is None else "changed"
            out.append(Change(section, path, kind, "", _text(a), _text(b)))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    return str(value)


def diff_fingerprints(a: Fingerprint, b: Fingerprint) -> FingerprintDiff:
    changes: list[Change] = []
    for f in fields(a.environment):
        old, new = getattr(a.environment, f.name), getattr(b.environment, f.name)
        if f.name in PACKAGE_FIELDS:
            changes += _package_changes("environment", f.name, old, new)
        elif old != new:
            changes += _scalars("environment", {f.name: old}, {f.name: new})
    host_a, host_b = asdict(a.host), asdict(b.host)
    changes += _scalars("host", host_a, host_b)
    return FingerprintDiff(
        tuple(changes),
        environment_identical=a.environment_hash == b.environment_hash,
        host_identical=a.host_hash == b.host_hash,
    )


def format_diff(diff: FingerprintDiff, a_label: str, b_label: str) -> str:
    if diff.identical:
        return f"{a_label} and {b_label} are identical\n"
    lines = [f"--- {a_label}", f"+++ {b_label}"]
    for section in ("environment", "host"):
        items = [c for c in diff.changes if c.section == section]
        same = diff.environment_identical if section == "environment" else diff.host_identical
        if same:
            lines.append(f"{section}: identical")
            continue
        lines.append(f"{section}: {len(items)} difference(s)")
        for c in items:
            what = f"{c.field}: {c.name}" if c.name else c.field
            if c.field == "files":  # old: the package that owns the file, when known
                sign = {"added": "+", "removed": "-"}.get(c.kind, "~")
                owner = f" ({c.old})" if c.old else ""
                lines.append(
                    f"  {sign} file {c.name}{owner}" + ("" if sign != "~" else f" {c.kind}")
                )
            elif c.kind == "added":
                lines.append(f"  + {what} {c.new}")
            elif c.kind == "removed":
                lines.append(f"  - {what} {c.old}")
            else:
                lines.append(f"  ~ {what} {c.old} -> {c.new}")
    return "\n".join(lines) + "\n"
