"""Canonical hashing, the fingerprint file, and diffs."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace

import pytest

from envd.errors import VerificationError
from envd.model import content
from envd.model.fingerprint import (
    EnvironmentSection,
    HostSection,
    Package,
    canonical_json,
    diff_fingerprints,
    dumps,
    environment_from_manifest,
    format_diff,
    loads,
    make_fingerprint,
)
from envd.model.plan import VENV


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SITE = "opt/venv/lib/python3.11/site-packages"
RECORD = "numpy/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,4\n"
IMAGE = _tar(
    {
        "usr/lib/os-release": b'ID=debian\nVERSION_ID="12"\nHOME_URL="https://x"\n',
        "var/lib/dpkg/status": b"Package: bash\nStatus: install ok installed\n"
        b"Architecture: amd64\nVersion: 5.2.15-2+b7\n\nPackage: libc6\n"
        b"Status: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n",
        "opt/venv/pyvenv.cfg": b"home = /usr/bin\nimplementation = CPython\n"
        b"version_info = 3.11.2.final.0\n",
        f"{SITE}/numpy/__init__.py": b"test",
        f"{SITE}/numpy-2.0.0.dist-info/METADATA": b"Name: numpy\nVersion: 2.0.0\n\n",
        f"{SITE}/numpy-2.0.0.dist-info/RECORD": RECORD.encode(),
    }
)


def env(**changes: object) -> EnvironmentSection:
    manifest = content.manifest_from_tars([io.BytesIO(IMAGE)])
    section = environment_from_manifest(manifest, "sha256:base", {"PYTHONHASHSEED": "0"}, VENV)
    return replace(section, **changes)


def test_the_environment_is_read_from_the_files() -> None:
    e = env()
    assert e.os_release == {"ID": "debian", "VERSION_ID": "12"}
    assert (e.glibc, e.arch) == ("2.36", "x86_64")
    assert e.python_version == "3.11.2" and e.python_implementation == "CPython"
    assert [(p.name, p.version) for p in e.python_packages] == [("numpy", "2.0.0")]
    assert [p.name for p in e.debian_packages] == ["bash", "libc6"]
    assert e.content_hash.startswith("sha256:") and e.files == 6
    edited = IMAGE.replace(b"version_info = 3.11.2", b"version_info = 3.11.3")
    other = content.manifest_from_tars([io.BytesIO(edited)])
    assert environment_from_manifest(other, "", {}, VENV).content_hash != e.content_hash


HOST = HostSection("Intel Xeon", "x86_64", "6.1.0", "20.10.24")


def test_canonical_json_ignores_key_order_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == canonical_json({"a": "é", "b": 1})
    assert canonical_json({"a": "é"}) == '{"a":"é"}'.encode()
    assert canonical_json((1, 2.5)) == canonical_json([1, 2.5]) == b"[1,2.5]"
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_hash_is_stable() -> None:
    fp = make_fingerprint(env(), HOST)
    assert fp.environment_hash == make_fingerprint(env(), HOST).environment_hash
    assert fp.environment_hash.startswith("sha256:") and len(fp.environment_hash) == 71
    # A fixed input has a fixed hash: a change of canonical form is caught here.
    assert make_fingerprint(env(), HOST).host_hash == (
        "sha256:"
        + __import__("hashlib")
        .sha256(
            canonical_json(
                {
                    "schema_version": 2,
                    "section": {
                        "arch": "x86_64",
                        "cpu_model": "Intel Xeon",
                        "cuda_driver_version": "",
                        "driver_version": "",
                        "engine_version": "20.10.24",
                        "gpus": [],
                        "kernel": "6.1.0",
                    },
                }
            )
        )
        .hexdigest()
    )


def test_host_does_not_change_environment_hash() -> None:
    a = make_fingerprint(env(), HOST)
    b = make_fingerprint(env(), replace(HOST, kernel="6.9"))
    assert a.environment_hash == b.environment_hash and a.root_hash != b.root_hash


def test_file_round_trip_and_tamper_refused() -> None:
    fp = make_fingerprint(env(), HOST)
    assert loads(dumps(fp), "f.json") == fp
    data = json.loads(dumps(fp))
    data["environment"]["python_packages"][0]["version"] = "9.9.9"
    with pytest.raises(VerificationError) as info:
        loads(json.dumps(data), "f.json")
    assert "environment_hash does not match" in str(info.value)
    with pytest.raises(VerificationError):
        loads("not json", "f.json")


def test_diff_names_packages_and_host_fields() -> None:
    a = make_fingerprint(env(), HOST)
    b = make_fingerprint(
        env(python_packages=(Package("numpy", "2.1.0", "cd" * 32), Package("six", "1.16.0", "x"))),
        replace(HOST, kernel="6.9"),
    )
    diff = diff_fingerprints(a, b)
    kinds = {(c.field, c.kind, c.name) for c in diff.changes}
    assert ("python_packages", "changed", "numpy") in kinds
    assert ("python_packages", "added", "six") in kinds
    assert ("kernel", "changed", "") in kinds
    text = format_diff(diff, "a", "b")
    assert "~ python_packages: numpy 2.0.0 -> 2.1.0" in text and "+ python_packages: six" in text


def test_identical() -> None:
    a = make_fingerprint(env(), HOST)
    diff = diff_fingerprints(a, a)
    assert diff.identical and diff.changes == ()
    assert "identical" in format_diff(diff, "a", "b")


def test_what_podmans_commit_adds_to_env_is_not_taken_for_the_specs() -> None:
    from envd.services.fingerprints import spec_env_names

    docker = ("PATH=/opt/venv/bin:/usr/bin", "VIRTUAL_ENV=/opt/venv", "MY_FLAG=1")
    podman = (*docker, "TERM=xterm", "container=podman")
    assert spec_env_names(podman) == spec_env_names(docker) == ["MY_FLAG"]
    # Without Podman's mark, a TERM the spec set is the spec's.
    assert spec_env_names((*docker, "TERM=xterm")) == ["MY_FLAG", "TERM"]
