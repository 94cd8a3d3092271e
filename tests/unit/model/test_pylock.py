from __future__ import annotations

import dataclasses
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from packaging.pylock import Pylock, PylockValidationError

from envd.errors import LockError
from envd.model import lockfile
from envd.model.lockfile import BaseLock, Inputs, LockFile, PythonPackage, Target
from envd.model.pylock import ArtifactFile, files_from_simple_json, missing_files, render_pylock

HEX = {c: c * 64 for c in "abcdef"}
FILES = "https://files.example.org/packages"

INPUTS = Inputs(
    base="debian:bookworm",
    python="3.11",
    system=(),
    requirements=("six", "torch"),
    indexes=("https://download.pytorch.org/whl/cpu",),
    cuda="",
    env=(),
    setup=(),
)


def make_lock(python: tuple[PythonPackage, ...] | None = None, **target: str) -> LockFile:
    return LockFile(
        envd_version="0.1.0",
        uv_version="0.13.9",
        inputs=INPUTS,
        inputs_hash=lockfile.hash_inputs(INPUTS),
        target=Target(
            **{
                "python_version": "3.11.2",
                "platform": "manylinux_2_36_x86_64",
                "glibc": "2.36",
                "arch": "x86_64",
                **target,
            }
        ),
        base=BaseLock(kind="image", reference="python:3.11-slim", digest="sha256:" + "0" * 64),
        system=(),
        python=python
        if python is not None
        else (
            PythonPackage("torch", "2.4.0+cpu", (f"sha256:{HEX['c']}",), INPUTS.indexes[0]),
            PythonPackage("six", "1.17.0", (f"sha256:{HEX['a']}", f"sha256:{HEX['b']}")),
        ),
    )


SIX_WHEEL = ArtifactFile(
    f"{FILES}/six-1.17.0-py2.py3-none-any.whl",
    HEX["a"],
    size=11050,
    upload_time=datetime(2024, 12, 4, 17, 35, 26, 475000, tzinfo=UTC),
)
SIX_SDIST = ArtifactFile(f"{FILES}/six-1.17.0.tar.gz", "sha256:" + HEX["b"], size=34031)
TORCH_WHEEL = ArtifactFile(
    "https://download.pytorch.org/whl/cpu/torch-2.4.0%2Bcpu-cp311-cp311-linux_x86_64.whl",
    HEX["c"],
)
ALL = (TORCH_WHEEL, SIX_SDIST, SIX_WHEEL)


def parse(text: str) -> tuple[dict[str, Any], Pylock]:
    data = tomllib.loads(text)
    return data, Pylock.from_dict(data)  # packaging's PEP 751 validator


def test_a_full_lock_is_valid_pep_751_with_every_pinned_file() -> None:
    data, pylock = parse(render_pylock(make_lock(), ALL))
    assert data["lock-version"] == "1.0"
    assert data["created-by"] == "envd"
    assert data["requires-python"] == "==3.11.2"
    assert data["environments"] == ["sys_platform == 'linux' and platform_machine == 'x86_64'"]
    assert data["tool"]["envd"]["inputs-hash"] == lockfile.hash_inputs(INPUTS)
    six, torch = data["packages"]  # sorted by name
    assert (six["name"], six["version"], six["index"]) == (
        "six",
        "1.17.0",
        "https://pypi.org/simple",
    )
    assert six["sdist"] == {
        "name": "six-1.17.0.tar.gz",
        "url": SIX_SDIST.url,
        "size": 34031,
        "hashes": {"sha256": HEX["b"]},
    }
    assert six["wheels"] == [
        {
            "name": "six-1.17.0-py2.py3-none-any.whl",
            "upload-time": datetime(2024, 12, 4, 17, 35, 26, tzinfo=UTC),
            "url": SIX_WHEEL.url,
            "size": 11050,
            "hashes": {"sha256": HEX["a"]},
        }
    ]
    assert torch["index"] == "https://download.pytorch.org/whl/cpu"
    assert torch["wheels"][0]["name"] == "torch-2.4.0+cpu-cp311-cp311-linux_x86_64.whl"
    assert "sdist" not in torch
    assert [str(p.version) for p in pylock.packages] == ["1.17.0", "2.4.0+cpu"]


def test_output_is_deterministic_whatever_the_order_of_files_and_packages() -> None:
    lock = make_lock()
    reversed_lock = dataclasses.replace(lock, python=lock.python[::-1])
    first = render_pylock(lock, ALL)
    assert render_pylock(reversed_lock, ALL[::-1]) == first
    assert first.endswith("\n")


def test_files_the_lock_does_not_pin_are_never_written() -> None:
    intruder = ArtifactFile(f"{FILES}/six-1.17.0-py3-none-any.whl", HEX["f"])
    data, _ = parse(render_pylock(make_lock(), (*ALL, intruder)))
    names = [w["name"] for p in data["packages"] for w in p.get("wheels", [])]
    assert "six-1.17.0-py3-none-any.whl" not in names
    assert HEX["f"] not in render_pylock(make_lock(), (*ALL, intruder))


def test_a_package_without_any_known_file_is_an_error_naming_it() -> None:
    with pytest.raises(LockError, match=r"torch==2\.4\.0\+cpu") as err:
        render_pylock(make_lock(), (SIX_WHEEL,))
    assert "six" not in str(err.value).split("for ", 1)[1].split(" (")[0]
    assert missing_files(make_lock(), (SIX_WHEEL,)) == ("torch==2.4.0+cpu",)
    assert missing_files(make_lock(), ()) == ("six==1.17.0", "torch==2.4.0+cpu")


def test_partial_leaves_unknown_packages_out_and_says_so() -> None:
    data, pylock = parse(render_pylock(make_lock(), (SIX_WHEEL,), partial=True))
    assert [p["name"] for p in data["packages"]] == ["six"]
    assert data["tool"]["envd"]["missing"] == ["torch==2.4.0+cpu"]
    assert "sdist" not in data["packages"][0]  # only the wheel was known
    assert len(pylock.packages) == 1


def test_a_package_with_no_files_would_be_invalid_pep_751() -> None:
    """Why render_pylock refuses: the spec (and packaging) reject a package with no source."""
    bare = {"lock-version": "1.0", "created-by": "envd", "packages": [{"name": "six"}]}
    with pytest.raises(PylockValidationError):
        Pylock.from_dict(bare)


def test_environments_are_left_out_when_the_platform_is_unknown() -> None:
    data, _ = parse(render_pylock(make_lock(platform="", arch=""), ALL))
    assert "environments" not in data
    data, _ = parse(
        render_pylock(make_lock(arch="aarch64", platform="manylinux_2_36_aarch64"), ALL)
    )
    assert data["environments"] == ["sys_platform == 'linux' and platform_machine == 'aarch64'"]


def test_a_malformed_digest_is_rejected() -> None:
    with pytest.raises(LockError, match="not a sha256"):
        render_pylock(make_lock(), (ArtifactFile(f"{FILES}/six-1.17.0.tar.gz", "abc"),))


def test_files_from_simple_json_reads_pep_691_pages() -> None:
    page = {
        "meta": {"api-version": "1.1"},
        "name": "six",
        "files": [
            {
                "filename": "six-1.17.0-py2.py3-none-any.whl",
                "url": "../../packages/six-1.17.0-py2.py3-none-any.whl",
                "hashes": {"sha256": HEX["a"]},
                "size": 11050,
                "upload-time": "2024-12-04T17:35:26.475Z",
            },
            {"filename": "six-1.17.0.tar.gz", "url": f"{FILES}/six-1.17.0.tar.gz", "hashes": {}},
            {"filename": "six-1.16.0.tar.gz", "url": f"{FILES}/six-1.16.0.tar.gz"},
        ],
    }
    files = files_from_simple_json(page, "https://pypi.example.org/simple/six/")
    assert files == (
        ArtifactFile(
            "https://pypi.example.org/packages/six-1.17.0-py2.py3-none-any.whl",
            HEX["a"],
            size=11050,
            upload_time=datetime(2024, 12, 4, 17, 35, 26, 475000, tzinfo=UTC),
        ),
    )


def test_upload_times_are_written_in_utc() -> None:
    local = timezone(timedelta(hours=2))
    wheel = dataclasses.replace(SIX_WHEEL, upload_time=datetime(2024, 1, 1, 12, tzinfo=local))
    data, _ = parse(render_pylock(make_lock(), (TORCH_WHEEL, wheel)))
    assert data["packages"][0]["wheels"][0]["upload-time"] == datetime(2024, 1, 1, 10, tzinfo=UTC)
