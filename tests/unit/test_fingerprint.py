"""Canonical hashing, the fingerprint file, and diffs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from envd.errors import VerificationError
from envd.model.fingerprint import (
    EnvironmentSection,
    HostSection,
    Package,
    canonical_json,
    diff_fingerprints,
    dumps,
    environment_from_probe,
    format_diff,
    loads,
    make_fingerprint,
)

PROBE = {
    "os_release": {"ID": "debian", "VERSION_ID": "12"},
    "glibc": "2.36",
    "arch": "x86_64",
    "debian_packages": [["bash", "5.2.15-2+b7", "amd64"]],
    "python": {
        "version": "3.11.2",
        "implementation": "CPython",
        "build": ["main", "Mar 13 2023"],
        "compiler": "GCC 12.2.0",
    },
    "python_packages": [["numpy", "2.0.0", "ab" * 32]],
    "cuda_libraries": [],
    "env": {"PYTHONHASHSEED": "0"},
}
HOST = HostSection("Intel Xeon", "x86_64", "6.1.0", "20.10.24")


def env(**changes: object) -> EnvironmentSection:
    return replace(environment_from_probe(PROBE, "sha256:base", {"PYTHONHASHSEED": "0"}), **changes)


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
                    "schema_version": 1,
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
