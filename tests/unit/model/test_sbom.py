from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from envd.model import lockfile
from envd.model.fingerprint import (
    EnvironmentSection,
    Fingerprint,
    HostSection,
    Package,
    make_fingerprint,
)
from envd.model.lockfile import BaseLock, Inputs, LockFile, PythonPackage, Target
from envd.model.sbom import deb_purl, pypi_purl, render_cyclonedx, render_spdx

WHEN = datetime(2026, 12, 1, 15, 30, 0, tzinfo=UTC)
IMAGE = "registry.example.org/team/demo@sha256:" + "d" * 64
DEBS = (
    Package("base-files", "12.4+deb12u5", "amd64"),
    Package("libc6", "2.36-9+deb12u4", "amd64"),
    Package("libc6", "2.36-9+deb12u4", "i386"),
    Package("libstdc++6", "12.2.0-14", "amd64"),
    Package("git", "1:2.39.2-1.1", "amd64"),
)
PYTHONS = (
    Package("PyYAML", "6.0.1", "1" * 64),
    Package("six", "1.17.0", "2" * 64),
    Package("torch", "2.4.0+cpu", "3" * 64),
)
SIX_HASHES = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)


def make_fp(
    debs: tuple[Package, ...] = DEBS, pythons: tuple[Package, ...] = PYTHONS
) -> Fingerprint:
    env = EnvironmentSection(
        base_digest="sha256:" + "0" * 64,
        os_release={"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12"},
        glibc="2.36",
        arch="x86_64",
        debian_packages=debs,
        python_version="3.11.2",
        python_implementation="CPython",
        python_packages=pythons,
        cuda_libraries=(),
        env={},
    )
    host = HostSection(cpu_model="test", arch="x86_64", kernel="6.1", engine_version="20.10")
    return make_fingerprint(env, host)


def make_lock() -> LockFile:
    inputs = Inputs("debian:bookworm", "3.11", (), ("six", "torch"), (), "", (), ())
    return LockFile(
        envd_version="0.1.0",
        uv_version="0.13.9",
        inputs=inputs,
        inputs_hash=lockfile.hash_inputs(inputs),
        target=Target("3.11.2", "manylinux_2_36_x86_64", "2.36", "x86_64"),
        base=BaseLock(kind="debian", suite="bookworm"),
        system=(),
        python=(
            PythonPackage("six", "1.17.0", SIX_HASHES),
            PythonPackage("torch", "2.3.0+cpu", ("sha256:" + "c" * 64,)),  # not the installed one
        ),
    )


def cyclonedx(fp: Fingerprint | None = None, lock: LockFile | None = None, **kw: Any) -> str:
    return render_cyclonedx(fp or make_fp(), lock, "demo", timestamp=WHEN, **kw)


def spdx(fp: Fingerprint | None = None, lock: LockFile | None = None, **kw: Any) -> str:
    return render_spdx(fp or make_fp(), lock, "demo", timestamp=WHEN, **kw)


def assert_valid_cyclonedx(text: str) -> None:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    assert errors is None, [str(e) for e in errors]  # type: ignore[union-attr]


def spdx_document(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "sbom.spdx.json"
    path.write_text(text, encoding="utf-8")
    document = parse_file(str(path))
    messages = validate_full_spdx_document(document)
    assert messages == [], [m.validation_message for m in messages]
    return document


# ------------------------------------------------------------------ purls


@pytest.mark.parametrize("pkg", DEBS)
def test_deb_purls_agree_with_packageurl_python(pkg: Package) -> None:
    ours = deb_purl(pkg.name, pkg.version, pkg.detail, "debian-12")
    theirs = PackageURL(
        "deb", "debian", pkg.name, pkg.version, {"arch": pkg.detail, "distro": "debian-12"}
    )
    assert ours == theirs.to_string()
    parsed = PackageURL.from_string(ours)
    assert (parsed.name, parsed.version) == (pkg.name, pkg.version)


def test_pypi_purls_use_the_canonical_name_and_encode_the_version() -> None:
    assert pypi_purl("PyYAML", "6.0.1") == "pkg:pypi/pyyaml@6.0.1"
    assert (
        pypi_purl("torch", "2.4.0+cpu")
        == PackageURL("pypi", None, "torch", "2.4.0+cpu").to_string()
    )
    assert PackageURL.from_string(pypi_purl("torch", "2.4.0+cpu")).version == "2.4.0+cpu"


# ------------------------------------------------------------------ CycloneDX


def test_cyclonedx_is_valid_1_6_with_every_package() -> None:
    text = cyclonedx(lock=make_lock(), image=IMAGE, tool_version="0.1.0")
    assert_valid_cyclonedx(text)
    bom = json.loads(text)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    assert bom["metadata"]["timestamp"] == "2026-12-01T15:30:00Z"
    top = bom["metadata"]["component"]
    assert (top["type"], top["name"]) == ("container", "demo")
    assert top["hashes"] == [{"alg": "SHA-256", "content": "d" * 64}]
    libraries = [c for c in bom["components"] if c["type"] == "library"]
    assert len(libraries) == len(DEBS) + len(PYTHONS)
    purls = {c["purl"] for c in libraries}
    assert "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&distro=debian-12" in purls
    assert "pkg:deb/debian/git@1:2.39.2-1.1?arch=amd64&distro=debian-12" in purls
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386&distro=debian-12" in purls
    assert {"pkg:pypi/pyyaml@6.0.1", "pkg:pypi/six@1.17.0", "pkg:pypi/torch@2.4.0%2Bcpu"} <= purls
    (os_component,) = [c for c in bom["components"] if c["type"] == "operating-system"]
    assert (os_component["name"], os_component["version"]) == ("debian", "12")
    (image_deps,) = [d for d in bom["dependencies"] if d["ref"] == top["bom-ref"]]
    assert set(image_deps["dependsOn"]) == {c["bom-ref"] for c in bom["components"]}


def test_cyclonedx_hashes_come_from_the_lock_for_the_installed_version_only() -> None:
    bom = json.loads(cyclonedx(lock=make_lock()))
    by_purl = {c["purl"]: c for c in bom["components"] if "purl" in c}
    six = by_purl["pkg:pypi/six@1.17.0"]
    assert six["hashes"] == [{"alg": "SHA-256", "content": h[7:]} for h in SIX_HASHES]
    assert {"name": "envd:record-sha256", "value": "2" * 64} in six["properties"]
    assert "hashes" not in by_purl["pkg:pypi/torch@2.4.0%2Bcpu"]  # lock pins 2.3.0+cpu
    assert not any(
        "hashes" in c for c in bom["components"] if c.get("purl", "").startswith("pkg:deb")
    )
    assert "hashes" not in json.loads(cyclonedx())["components"][1]  # no lock, no hashes


def test_cyclonedx_is_deterministic_and_serial_follows_the_environment() -> None:
    fp = make_fp()
    shuffled = make_fp(DEBS[::-1], PYTHONS[::-1])
    assert cyclonedx(fp, make_lock()) == cyclonedx(fp, make_lock())
    serial = json.loads(cyclonedx(fp))["serialNumber"]
    assert serial.startswith("urn:uuid:")
    assert json.loads(cyclonedx(shuffled))["components"] == json.loads(cyclonedx(fp))["components"]
    other = make_fp(pythons=(*PYTHONS, Package("idna", "3.7", "4" * 64)))
    assert json.loads(cyclonedx(other))["serialNumber"] != serial
    local = WHEN.astimezone(timezone(timedelta(hours=-5)))
    assert json.loads(render_cyclonedx(fp, None, "demo", timestamp=local))["serialNumber"] == serial
    assert (
        json.loads(render_cyclonedx(fp, None, "demo", timestamp=local))["metadata"]["timestamp"]
        == "2026-12-01T15:30:00Z"
    )


def test_cyclonedx_validator_catches_a_broken_bom() -> None:
    """The check above can fail: a malformed purl-less hash breaks the schema."""
    bom = json.loads(cyclonedx(lock=make_lock()))
    bom["components"][1]["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    assert errors is not None


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        render_cyclonedx(make_fp(), None, "demo", timestamp=datetime(2026, 1, 1))


# ------------------------------------------------------------------ SPDX


def test_spdx_is_valid_2_3_with_every_package(tmp_path: Path) -> None:
    text = spdx(lock=make_lock(), image=IMAGE, tool_version="0.1.0")
    document = spdx_document(text, tmp_path)
    data = json.loads(text)
    assert data["spdxVersion"] == "SPDX-2.3"
    assert data["creationInfo"] == {
        "created": "2026-12-01T15:30:00Z",
        "creators": ["Tool: envd-0.1.0"],
    }
    assert len(document.packages) == 1 + len(DEBS) + len(PYTHONS)
    purls = {ref.locator for p in document.packages for ref in p.external_references}
    assert len(purls) == len(DEBS) + len(PYTHONS)
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12" in purls
    assert "pkg:pypi/pyyaml@6.0.1" in purls
    ids = [p.spdx_id for p in document.packages]
    assert len(set(ids)) == len(ids)  # libc6 amd64 and i386 stay apart
    (described,) = [r for r in document.relationships if r.relationship_type.name == "DESCRIBES"]
    assert described.related_spdx_element_id == "SPDXRef-Image"
    contains = [r for r in document.relationships if r.relationship_type.name == "CONTAINS"]
    assert len(contains) == len(DEBS) + len(PYTHONS)
    image = next(p for p in data["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": "d" * 64}]


def test_spdx_checksums_come_from_the_lock(tmp_path: Path) -> None:
    data = json.loads(spdx(lock=make_lock()))
    six = next(p for p in data["packages"] if p["name"] == "six")
    assert [c["checksumValue"] for c in six["checksums"]] == [h[7:] for h in SIX_HASHES]
    torch = next(p for p in data["packages"] if p["name"] == "torch")
    assert "checksums" not in torch


def test_spdx_is_deterministic_and_namespace_follows_the_environment() -> None:
    fp = make_fp()
    assert spdx(fp, make_lock()) == spdx(fp, make_lock())
    shuffled = json.loads(spdx(make_fp(DEBS[::-1], PYTHONS[::-1]), make_lock()))
    assert shuffled["packages"][1:] == json.loads(spdx(fp, make_lock()))["packages"][1:]
    namespace = json.loads(spdx(fp))["documentNamespace"]
    assert namespace.startswith("https://") and "#" not in namespace
    changed = make_fp(debs=(*DEBS, Package("curl", "7.88.1-10", "amd64")))
    assert json.loads(spdx(changed))["documentNamespace"] != namespace


def test_spdx_validation_fails_on_a_broken_document(tmp_path: Path) -> None:
    data = json.loads(spdx(lock=make_lock()))
    data["relationships"][1]["relatedSpdxElement"] = "SPDXRef-nowhere"
    path = tmp_path / "broken.spdx.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert validate_full_spdx_document(parse_file(str(path))) != []


def test_an_empty_image_is_still_valid(tmp_path: Path) -> None:
    fp = make_fp((), ())
    assert_valid_cyclonedx(cyclonedx(fp))
    spdx_document(spdx(fp), tmp_path)


def test_a_release_without_version_id_names_its_codename() -> None:
    fp = make_fp()
    env = fp.environment
    sid = make_fingerprint(
        type(env)(**{**env.__dict__, "os_release": {"ID": "debian", "VERSION_CODENAME": "trixie"}}),
        fp.host,
    )
    purls = {c.get("purl") for c in json.loads(cyclonedx(sid))["components"]}
    assert "pkg:deb/debian/git@1:2.39.2-1.1?arch=amd64&distro=trixie" in purls
