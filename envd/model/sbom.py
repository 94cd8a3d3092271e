"""SBOMs of a built image from its fingerprint (and lock): CycloneDX 1.6 JSON and SPDX 2.3 JSON.

Pure: no I/O. Every Debian package and every Python distribution in the fingerprint is one
component (one SPDX package) with its package URL; Python distributions carry the sha256 of every
artifact the lock pins for that exact version (the lock does not record which of them was
installed, so all are listed). The image itself is the top-level component / described package.
Output is deterministic: the serial number and document namespace are derived from the
environment hash and the name, and the timestamp is a parameter.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from packaging.utils import canonicalize_name

from envd.model.fingerprint import Fingerprint
from envd.model.lockfile import LockFile

TOOL_NAME = "envd"
NAMESPACE_BASE = "https://envd.invalid/spdx"  # SPDX needs a unique URI; .invalid never resolves
_SBOM_NAMESPACE = uuid.UUID("5a0c0a6e-8f1e-5e0b-9b1d-0e6e7d000001")
_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class _Component:
    kind: str  # "deb" or "pypi"
    name: str
    version: str
    purl: str
    sha256: tuple[str, ...]  # hex digests, sorted
    arch: str = ""
    record_sha256: str = ""  # the installed distribution's RECORD sha256 (Python only)


def deb_purl(name: str, version: str, arch: str, distro: str, vendor: str = "debian") -> str:
    qualifiers = {"arch": arch, "distro": distro}
    return _purl("deb", vendor, name, version, qualifiers)


def pypi_purl(name: str, version: str) -> str:
    return _purl("pypi", "", canonicalize_name(name), version, {})


def render_cyclonedx(
    fp: Fingerprint,
    lock: LockFile | None,
    name: str,
    *,
    timestamp: datetime,
    image: str = "",
    tool_version: str = "",
) -> str:
    """A CycloneDX 1.6 JSON BOM of the image `name` (`image`: its reference, e.g. by digest)."""
    env = fp.environment
    components = _components(fp, lock)
    image_ref = "image"
    os_ref = "os"
    os_component: dict[str, Any] = {
        "type": "operating-system",
        "bom-ref": os_ref,
        "name": env.os_release.get("ID", "linux"),
    }
    if version := env.os_release.get("VERSION_ID", ""):
        os_component["version"] = version
    if description := env.os_release.get("PRETTY_NAME", ""):
        os_component["description"] = description
    top: dict[str, Any] = {"type": "container", "bom-ref": image_ref, "name": name}
    if digest := _image_digest(image):
        top["version"] = f"sha256:{digest}"
        top["hashes"] = [{"alg": "SHA-256", "content": digest}]
    top["properties"] = _properties(
        {
            "envd:image": image,
            "envd:environment-hash": fp.environment_hash,
            "envd:base-digest": env.base_digest,
            "envd:python-version": env.python_version,
            "envd:lock-inputs-hash": lock.inputs_hash if lock else "",
        }
    )
    tool: dict[str, Any] = {"type": "application", "name": TOOL_NAME}
    if tool_version:
        tool["version"] = tool_version
    bom_components: list[dict[str, Any]] = [os_component]
    for c in components:
        entry: dict[str, Any] = {"type": "library", "bom-ref": c.purl, "name": c.name}
        entry["version"] = c.version
        if c.sha256:
            entry["hashes"] = [{"alg": "SHA-256", "content": h} for h in c.sha256]
        entry["purl"] = c.purl
        props = {"envd:arch": c.arch, "envd:record-sha256": c.record_sha256}
        if properties := _properties(props):
            entry["properties"] = properties
        bom_components.append(entry)
    bom = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{_uuid('cyclonedx', fp, name)}",
        "version": 1,
        "metadata": {
            "timestamp": _timestamp(timestamp),
            "tools": {"components": [tool]},
            "component": top,
        },
        "components": bom_components,
        "dependencies": [
            {"ref": image_ref, "dependsOn": [os_ref, *(c.purl for c in components)]},
            *({"ref": ref} for ref in [os_ref, *(c.purl for c in components)]),
        ],
    }
    return json.dumps(bom, indent=2, ensure_ascii=False) + "\n"


def render_spdx(
    fp: Fingerprint,
    lock: LockFile | None,
    name: str,
    *,
    timestamp: datetime,
    image: str = "",
    tool_version: str = "",
) -> str:
    """An SPDX 2.3 JSON document describing the image `name` and the packages it contains."""
    components = _components(fp, lock)
    image_id = "SPDXRef-Image"
    top: dict[str, Any] = {
        "SPDXID": image_id,
        "name": name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
    }
    if digest := _image_digest(image):
        top["versionInfo"] = f"sha256:{digest}"
        top["checksums"] = [{"algorithm": "SHA256", "checksumValue": digest}]
    comment = f"envd environment hash {fp.environment_hash}"
    if image:
        comment += f"; image {image}"
    top["comment"] = comment
    packages = [top]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    for spdx_id, c in zip(_spdx_ids(components), components, strict=True):
        package: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "LIBRARY",
        }
        if c.sha256:
            package["checksums"] = [{"algorithm": "SHA256", "checksumValue": h} for h in c.sha256]
        package["externalRefs"] = [
            {
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": c.purl,
            }
        ]
        packages.append(package)
        relationships.append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
    creators = [f"Tool: {TOOL_NAME}-{tool_version}" if tool_version else f"Tool: {TOOL_NAME}"]
    document = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"{NAMESPACE_BASE}/{quote(name, safe='')}-{_uuid('spdx', fp, name)}",
        "creationInfo": {"created": _timestamp(timestamp), "creators": creators},
        "packages": packages,
        "relationships": relationships,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _components(fp: Fingerprint, lock: LockFile | None) -> list[_Component]:
    env = fp.environment
    vendor = env.os_release.get("ID", "") or "debian"
    release = env.os_release.get("VERSION_ID", "")
    distro = f"{vendor}-{release}" if release else env.os_release.get("VERSION_CODENAME", "")
    debs = [
        _Component(
            "deb",
            p.name,
            p.version,
            deb_purl(p.name, p.version, p.detail, distro, vendor),
            (),
            p.detail,
        )
        for p in env.debian_packages
    ]
    pinned = _lock_hashes(lock)
    pythons = [
        _Component(
            "pypi",
            canonicalize_name(p.name),
            p.version,
            pypi_purl(p.name, p.version),
            pinned.get((canonicalize_name(p.name), p.version), ()),
            record_sha256=p.detail,
        )
        for p in env.python_packages
    ]
    return sorted(debs, key=_key) + sorted(pythons, key=_key)


def _key(c: _Component) -> tuple[str, str, str]:
    return (c.name, c.arch, c.version)


def _lock_hashes(lock: LockFile | None) -> Mapping[tuple[str, str], tuple[str, ...]]:
    if lock is None:
        return {}
    return {
        (canonicalize_name(p.name), p.version): tuple(
            sorted({m[1] for h in p.hashes if (m := _DIGEST.fullmatch(h))})
        )
        for p in lock.python
    }


def _spdx_ids(components: Sequence[_Component]) -> list[str]:
    """SPDXRef-<kind>-<name>-<arch>, made safe and unique (a suffix where two would clash)."""
    seen: set[str] = set()
    out = []
    for c in components:
        base = "-".join(x for x in (c.kind, c.name, c.arch) if x)
        base = "SPDXRef-" + _SPDX_ID_UNSAFE.sub("-", base).strip("-")
        candidate, n = base, 1
        while candidate in seen:
            n += 1
            candidate = f"{base}-{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _purl(kind: str, namespace: str, name: str, version: str, qualifiers: dict[str, str]) -> str:
    path = "/".join(_quote(x) for x in (namespace, name) if x)
    purl = f"pkg:{kind}/{path}"
    if version:
        purl += f"@{_quote(version)}"
    pairs = sorted((k.lower(), v) for k, v in qualifiers.items() if v)
    if pairs:
        purl += "?" + "&".join(f"{k}={_quote(v)}" for k, v in pairs)
    return purl


def _quote(value: str) -> str:
    return quote(value, safe=":")


def _properties(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items() if v]


def _image_digest(image: str) -> str:
    _, sep, digest = image.rpartition("@")
    match = _DIGEST.fullmatch(digest) if sep else None
    return match[1] if match else ""


def _uuid(kind: str, fp: Fingerprint, name: str) -> uuid.UUID:
    return uuid.uuid5(_SBOM_NAMESPACE, f"{kind}\n{fp.environment_hash}\n{name}")


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("the SBOM timestamp needs a time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
