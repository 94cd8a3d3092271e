from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from envd.errors import LockError
from envd.model import lockfile
from envd.model.lockfile import (
    LOCK_VERSION,
    BaseLock,
    DebianPackage,
    Inputs,
    LockFile,
    PythonPackage,
    Target,
)
from envd.model.spec import Base, Spec

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64

INPUTS = Inputs(
    base="debian:bookworm",
    python="3.11",
    system=("git", "libgomp1"),
    requirements=("numpy>=1.26", "pandas"),
    indexes=("https://download.pytorch.org/whl/cpu",),
    cuda="",
    env=(("PYTHONHASHSEED", "0"),),
    setup=("python -m spacy download en_core_web_sm",),
)


def make_lock(inputs: Inputs = INPUTS, **changes: object) -> LockFile:
    lock = LockFile(
        envd_version="0.1.0",
        uv_version="0.13.9",
        inputs=inputs,
        inputs_hash=lockfile.hash_inputs(inputs),
        target=Target(
            python_version="3.11.2", platform="manylinux_2_36_x86_64", glibc="2.36", arch="x86_64"
        ),
        base=BaseLock(
            kind="debian",
            suite="bookworm",
            mirror="http://deb.debian.org/debian",
            tarball_sha256="c" * 64,
            packages=(DebianPackage("base-files", "12.4+deb12u5", "amd64"),),
        ),
        system=(DebianPackage("git", "1:2.39.2-1.1", "amd64"),),
        python=(
            PythonPackage("numpy", "1.26.4", (SHA_A, SHA_B)),
            PythonPackage("pandas", "2.2.2", (SHA_B,), index=""),
        ),
    )
    return dataclasses.replace(lock, **changes)  # type: ignore[arg-type]


def make_spec(**changes: object) -> Spec:
    spec = Spec(project_dir="/p", name="churn", base=Base(debian="bookworm"))
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


# inputs_from_spec


def test_inputs_from_spec_normalises() -> None:
    spec = make_spec(
        python="3.11",
        system=("libgomp1", "git", "git"),
        packages=("pandas", "numpy >= 1.26"),
        requirements_file="requirements.txt",
        requirements=("scikit-learn==1.5.0",),
        indexes=("https://download.pytorch.org/whl/cpu",),
        cuda="12.4",
        env=(("B", "2"), ("A", "1")),
        setup=("echo two", "echo one"),
    )
    assert lockfile.inputs_from_spec(spec) == Inputs(
        base="debian:bookworm",
        python="3.11",
        system=("git", "libgomp1"),
        requirements=("pandas", "numpy>=1.26", "scikit-learn==1.5.0"),
        indexes=("https://download.pytorch.org/whl/cpu",),
        cuda="12.4",
        env=(("A", "1"), ("B", "2")),
        setup=("echo two", "echo one"),
    )


def test_inputs_from_spec_defaults_and_image_base() -> None:
    inputs = lockfile.inputs_from_spec(make_spec(base=Base(image="python:3.11-slim")))
    assert inputs.base == "image:python:3.11-slim"
    assert (inputs.python, inputs.cuda) == ("", "")
    assert inputs.system == inputs.requirements == inputs.env == inputs.setup == ()


# hash_inputs


def test_hash_inputs_is_sha256_of_canonical_json() -> None:
    canonical = (
        '{"base":"debian:bookworm","cuda":"","env":[["PYTHONHASHSEED","0"]],'
        '"indexes":["https://download.pytorch.org/whl/cpu"],"python":"3.11",'
        '"requirements":["numpy>=1.26","pandas"],'
        '"setup":["python -m spacy download en_core_web_sm"],"system":["git","libgomp1"]}'
    )
    expected = "sha256:3c5b5ef424b38c71b483d0a505318df5b7f35732e3529bf19045b4fe46cd2516"
    assert "sha256:" + hashlib.sha256(canonical.encode()).hexdigest() == expected
    assert lockfile.hash_inputs(INPUTS) == expected


def test_hash_inputs_changes_with_any_field() -> None:
    assert lockfile.hash_inputs(dataclasses.replace(INPUTS, cuda="12.4")) != lockfile.hash_inputs(
        INPUTS
    )


# dumps


def test_dumps_is_deterministic_and_pretty() -> None:
    text = lockfile.dumps(make_lock())
    assert text == lockfile.dumps(make_lock())
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text.startswith('{\n  "base": {')
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["inputs"]["env"] == [["PYTHONHASHSEED", "0"]]
    assert data["lock_version"] == LOCK_VERSION


def test_dumps_ignores_construction_order() -> None:
    lock = make_lock()
    shuffled = dataclasses.replace(
        lock,
        python=(
            PythonPackage("pandas", "2.2.2", (SHA_B,)),
            PythonPackage("numpy", "1.26.4", (SHA_B, SHA_A)),
        ),
    )
    assert lockfile.dumps(shuffled) == lockfile.dumps(lock)


def test_loads_round_trips() -> None:
    lock = make_lock(shared_image="localhost:5000/team/churn@sha256:" + "d" * 64)
    assert lockfile.loads(lockfile.dumps(lock), "envd.lock") == lock


def test_loads_accepts_any_key_order() -> None:
    data = json.loads(lockfile.dumps(make_lock()))
    reordered = json.dumps(dict(reversed(list(data.items()))))
    assert lockfile.loads(reordered, "envd.lock") == make_lock()


# loads validation


def _mutated(change: object) -> str:
    data = json.loads(lockfile.dumps(make_lock()))
    change(data)  # type: ignore[operator]
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[]", "expected a JSON object"),
        (_mutated(lambda d: d.pop("lock_version")), "`lock_version` is missing"),
        (_mutated(lambda d: d.update(lock_version=0)), "unknown lock version 0"),
        (_mutated(lambda d: d.pop("target")), "missing key `target`"),
        (_mutated(lambda d: d.update(extra=1)), "unknown key `extra`"),
        (_mutated(lambda d: d["target"].update(glibc=2.36)), "target.glibc: expected a string"),
        (
            _mutated(lambda d: d["python"][0].update(hashes="x")),
            "python[0].hashes: expected a list",
        ),
        (
            _mutated(lambda d: d["inputs"].update(env=[["A"]])),
            "inputs.env[0]: expected 2 items, found 1",
        ),
        (_mutated(lambda d: d["inputs"].update(cuda="12.4")), "`inputs_hash` does not match"),
        (_mutated(lambda d: d["python"][0].update(hashes=[])), "numpy needs sha256 hashes"),
        (_mutated(lambda d: d["python"][0].update(hashes=["md5:00"])), "needs sha256 hashes"),
        (_mutated(lambda d: d["python"].append(d["python"][0])), "numpy is listed twice"),
    ],
)
def test_loads_rejects_corrupt_locks(text: str, message: str) -> None:
    with pytest.raises(LockError) as info:
        lockfile.loads(text, "/p/envd.lock")
    assert str(info.value).startswith("/p/envd.lock: ")
    assert message in info.value.message
    assert info.value.hint is not None and "envctl lock" in info.value.hint


def test_loads_names_a_newer_lock_version() -> None:
    text = _mutated(lambda d: d.update(lock_version=LOCK_VERSION + 1))
    with pytest.raises(LockError, match="written by a newer envd") as info:
        lockfile.loads(text, "/p/envd.lock")
    assert "/p/envd.lock" in info.value.message
    assert info.value.hint is not None and "upgrade envd" in info.value.hint


# staleness


def test_in_sync_lock_has_no_reasons() -> None:
    assert lockfile.staleness(make_lock(), INPUTS) == []


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"requirements": ("numpy>=1.26", "pandas", "scipy")}, ["package added: scipy"]),
        ({"requirements": ("pandas",)}, ["package removed: numpy"]),
        (
            {"requirements": ("numpy>=2", "pandas")},
            ["constraint changed: numpy>=1.26 → numpy>=2"],
        ),
        ({"requirements": ("pandas", "numpy>=1.26")}, ["package order changed"]),
        ({"base": "debian:trixie"}, ["base changed: debian:bookworm → debian:trixie"]),
        ({"python": "3.12"}, ["python changed: 3.11 → 3.12"]),
        ({"python": ""}, ["python changed: 3.11 → unset"]),
        ({"system": ("git", "libgomp1", "make")}, ["system package added: make"]),
        ({"system": ("libgomp1",)}, ["system package removed: git"]),
        (
            {"indexes": ("https://download.pytorch.org/whl/cpu", "https://x.test/simple")},
            ["index added: https://x.test/simple"],
        ),
        ({"indexes": ()}, ["index removed: https://download.pytorch.org/whl/cpu"]),
        ({"cuda": "12.4"}, ["cuda changed: unset → 12.4"]),
        ({"env": (("PYTHONHASHSEED", "1"),)}, ["env changed: PYTHONHASHSEED"]),
        ({"env": (("FOO", "x"), ("PYTHONHASHSEED", "0"))}, ["env changed: FOO"]),
        ({"env": ()}, ["env changed: PYTHONHASHSEED"]),
        ({"setup": ()}, ["setup changed"]),
    ],
)
def test_staleness_reasons(changes: dict[str, object], reasons: list[str]) -> None:
    inputs = dataclasses.replace(INPUTS, **changes)  # type: ignore[arg-type]
    assert lockfile.staleness(make_lock(), inputs) == reasons


def test_requirements_compare_by_canonical_name() -> None:
    spec = make_spec(
        python="3.11",
        system=INPUTS.system,
        packages=("NumPy >= 1.26", "Pandas"),
        indexes=INPUTS.indexes,
        env=INPUTS.env,
        setup=INPUTS.setup,
    )
    assert lockfile.staleness(make_lock(), lockfile.inputs_from_spec(spec)) == []


def test_staleness_reports_every_change() -> None:
    inputs = dataclasses.replace(INPUTS, python="3.12", requirements=("pandas", "polars"))
    assert lockfile.staleness(make_lock(), inputs) == [
        "python changed: 3.11 → 3.12",
        "package added: polars",
        "package removed: numpy",
    ]


def test_index_order_matters() -> None:
    two = ("https://a.test/simple", "https://b.test/simple")
    lock = make_lock(dataclasses.replace(INPUTS, indexes=two))
    inputs = dataclasses.replace(INPUTS, indexes=two[::-1])
    assert lockfile.staleness(lock, inputs) == ["index order changed"]


def test_staleness_catches_a_stale_hash() -> None:
    assert lockfile.staleness(make_lock(inputs_hash="sha256:" + "0" * 64), INPUTS) == [
        "inputs hash changed"
    ]


# hand edits


def test_a_hand_edited_sha256_is_named() -> None:
    data = json.loads(lockfile.dumps(make_lock()))
    data["python"][0]["hashes"] = ["sha256:" + "0" * 64]
    with pytest.raises(lockfile.LockEdited, match="numpy's sha256 changed") as edited:
        lockfile.loads(json.dumps(data), "envd.lock")
    assert edited.value.exit_code == 1 and edited.value.edited == ("numpy",)
    assert edited.value.hint is not None and "envctl lock" in edited.value.hint


def test_a_hand_edited_version_is_named() -> None:
    data = json.loads(lockfile.dumps(make_lock()))
    data["python"][1]["version"] = "0.0.1"
    with pytest.raises(lockfile.LockEdited, match="pandas's pinned version changed"):
        lockfile.loads(json.dumps(data), "envd.lock")


def test_a_lock_without_an_integrity_record_still_reads() -> None:
    """Locks written before the record existed are read as they are."""
    data = json.loads(lockfile.dumps(make_lock()))
    del data["integrity"]
    assert lockfile.loads(json.dumps(data), "envd.lock") == make_lock()
