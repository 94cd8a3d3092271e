"""The target (Python, glibc, arch, platform tag) without an engine."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from envd.errors import LockError
from envd.model.lockfile import Target
from envd.model.target import (
    PROBE_SCRIPT,
    check_python,
    inspect_target,
    platform_tag,
    target_from_probe,
)

PROBE = '{"python": "3.11.2", "glibc": "2.36", "arch": "x86_64"}'
TARGET = Target("3.11.2", "manylinux_2_36_x86_64", "2.36", "x86_64")


@pytest.mark.parametrize(
    ("glibc", "arch", "tag"),
    [
        ("2.36", "x86_64", "manylinux_2_36_x86_64"),
        ("2.17", "aarch64", "manylinux_2_17_aarch64"),
        ("2.31.1", "ppc64le", "manylinux_2_31_ppc64le"),
    ],
)
def test_platform_tag(glibc: str, arch: str, tag: str) -> None:
    assert platform_tag(glibc, arch) == tag


@pytest.mark.parametrize(("glibc", "arch"), [("", "x86_64"), ("2", "x86_64"), ("2.36", "")])
def test_platform_tag_refuses_what_is_not_a_version(glibc: str, arch: str) -> None:
    with pytest.raises(ValueError):
        platform_tag(glibc, arch)


def test_target_from_probe_skips_other_lines() -> None:
    output = f"Warning: something on stderr\n{PROBE}\n"
    assert target_from_probe(output, "img") == TARGET


def test_target_from_probe_refuses_musl() -> None:
    with pytest.raises(LockError, match="does not use glibc") as caught:
        target_from_probe('{"python": "3.12.1", "glibc": "", "arch": "x86_64"}', "alpine:3")
    assert caught.value.hint and "debian" in caught.value.hint


@pytest.mark.parametrize("output", ["", "not json", '{"python": "3.11.2"}'])
def test_target_from_probe_refuses_garbage(output: str) -> None:
    with pytest.raises(LockError, match="could not read the Python target of img"):
        target_from_probe(output, "img")


def test_probe_script_runs_on_this_host() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    target = target_from_probe(out, "host")
    assert target.python_version == platform.python_version()
    assert target.arch == platform.machine()
    assert target.platform.startswith("manylinux_2_")


# ------------------------------------------------------------ check_python


@pytest.mark.parametrize("wanted", [None, "", "3", "3.11", "3.11.2"])
def test_check_python_accepts(wanted: str | None) -> None:
    check_python(wanted, TARGET, "envd.yaml")


@pytest.mark.parametrize("wanted", ["3.12", "3.1", "3.11.3", "3.11.20", "2"])
def test_check_python_refuses(wanted: str) -> None:
    with pytest.raises(LockError) as caught:
        check_python(wanted, TARGET, "p/envd.yaml", base="envd/base-debian:abc")
    message = caught.value.message
    assert message.startswith("p/envd.yaml: ")
    assert f'"{wanted}"' in message and "3.11.2" in message and "envd/base-debian:abc" in message
    assert caught.value.hint and 'python: "3.11"' in caught.value.hint


# ------------------------------------------------------------ inspect_target


@dataclass
class Result:
    exit_code: int
    output: str


@dataclass
class FakeEngine:
    result: Result = field(default_factory=lambda: Result(0, PROBE + "\n"))
    runs: list[tuple[str, tuple[str, ...], bool]] = field(default_factory=list)

    def run(self, image: str, argv: Sequence[str], *, network: bool = True) -> Result:
        self.runs.append((image, tuple(argv), network))
        return self.result


@dataclass
class DictCache:
    data: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        self.data[key] = value


def test_inspect_runs_one_offline_container_per_key() -> None:
    engine, cache = FakeEngine(), DictCache()
    first = inspect_target(engine, "img", cache=cache, cache_key="target:sha256:abc")
    second = inspect_target(engine, "img", cache=cache, cache_key="target:sha256:abc")
    assert first == second == TARGET
    assert len(engine.runs) == 1
    image, argv, network = engine.runs[0]
    assert image == "img" and argv[:2] == ("python3", "-c") and network is False
    assert json.loads(cache.data["target:sha256:abc"])["platform"] == "manylinux_2_36_x86_64"


def test_inspect_ignores_a_cache_entry_it_cannot_read() -> None:
    engine = FakeEngine()
    cache = DictCache({"k": '{"python_version": "3.11.2"}', "old": "garbage"})
    assert inspect_target(engine, "img", cache=cache, cache_key="k") == TARGET
    assert inspect_target(engine, "img", cache=cache, cache_key="old") == TARGET
    assert len(engine.runs) == 2


@pytest.mark.parametrize("code", [126, 127])
def test_base_without_python_is_a_lock_error(code: int) -> None:
    engine = FakeEngine(Result(code, 'exec: "python3": executable file not found in $PATH'))
    cache = DictCache()
    with pytest.raises(LockError, match="the base image busybox has no python3") as caught:
        inspect_target(engine, "busybox", cache=cache, cache_key="k")
    assert caught.value.hint and "debian" in caught.value.hint
    assert cache.data == {}


def test_failing_python_shows_its_output() -> None:
    engine = FakeEngine(Result(1, "Traceback ...\nSyntaxError: invalid syntax"))
    with pytest.raises(LockError, match="exit 1") as caught:
        inspect_target(engine, "img", cache=DictCache(), cache_key="k")
    assert "SyntaxError" in caught.value.message
