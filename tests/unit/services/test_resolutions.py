"""A lock made again with nothing changed is not resolved again; any change is."""

from __future__ import annotations

from typing import Any

import pytest

from envd.model.lockfile import PythonPackage
from envd.services.resolutions import Resolutions

NUMPY = PythonPackage("numpy", "2.1.0", ("sha256:" + "a" * 64,))
LOCAL = PythonPackage("mine", "1.0", ("sha256:" + "b" * 64,), url="https://example.com/mine.whl")


class Memory:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def put(self, key: str, value: str) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class Uv:
    """uv as a fake: counts the questions, answers numpy at a version that can change."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.version = "2.1.0"
        self.uv = "0.13.9"

    def resolve(self, requirements: Any, **settings: Any) -> tuple[PythonPackage, ...]:
        self.asked.append({"requirements": list(requirements), **settings})
        return (PythonPackage("numpy", self.version, NUMPY.hashes),)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Resolutions, Uv, Clock, Memory]:
    uv, clock, memory = Uv(), Clock(), Memory()
    resolutions = Resolutions(memory, uv.resolve, lambda: uv.uv, clock=clock, fresh_s=600)
    return resolutions, uv, clock, memory


SETTINGS: dict[str, Any] = {
    "python_version": "3.11",
    "platform": "manylinux_2_36_x86_64",
    "indexes": (),
    "cache_dir": "/tmp/a",
    "extra_constraints": (),
    "from_source": (),
}


def test_the_same_question_is_answered_once_and_the_answer_kept_whole() -> None:
    resolutions, uv, _, _ = make()
    first = resolutions.resolve(["numpy"], direct={"mine": LOCAL}, **SETTINGS)
    again = resolutions.resolve(
        ["numpy"], direct={"mine": LOCAL}, **{**SETTINGS, "cache_dir": "/b"}
    )
    assert again == first == (NUMPY,)
    assert len(uv.asked) == 1


def test_every_changed_input_asks_uv_again() -> None:
    resolutions, uv, _, _ = make()
    resolutions.resolve(["numpy"], **SETTINGS)
    resolutions.resolve(["numpy>=2"], **SETTINGS)
    resolutions.resolve(["numpy"], **{**SETTINGS, "python_version": "3.12"})
    resolutions.resolve(["numpy"], **{**SETTINGS, "platform": "manylinux_2_36_aarch64"})
    resolutions.resolve(["numpy"], **{**SETTINGS, "indexes": ("https://example.com/simple",)})
    resolutions.resolve(["numpy"], **{**SETTINGS, "extra_constraints": ("numpy<3",)})
    resolutions.resolve(["numpy"], **{**SETTINGS, "from_source": ("numpy",)})
    resolutions.resolve(["numpy"], preferences=(NUMPY,), **SETTINGS)
    resolutions.resolve(["numpy"], direct={"mine": LOCAL}, **SETTINGS)
    other = PythonPackage(LOCAL.name, LOCAL.version, ("sha256:" + "c" * 64,), url=LOCAL.url)
    resolutions.resolve(["numpy"], direct={"mine": other}, **SETTINGS)
    assert len(uv.asked) == 10
    uv.uv = "0.14.0"  # another uv may resolve differently
    resolutions.resolve(["numpy"], **SETTINGS)
    assert len(uv.asked) == 11


def test_an_answer_older_than_the_index_keeps_its_pages_fresh_is_asked_again() -> None:
    resolutions, uv, clock, _ = make()
    assert resolutions.resolve(["numpy"], **SETTINGS)[0].version == "2.1.0"
    uv.version = "2.2.0"  # a release on the index
    clock.now += 599
    assert resolutions.resolve(["numpy"], **SETTINGS)[0].version == "2.1.0"
    clock.now += 2
    assert resolutions.resolve(["numpy"], **SETTINGS)[0].version == "2.2.0"
    assert len(uv.asked) == 2


def test_upgrade_always_asks_uv() -> None:
    resolutions, uv, _, _ = make()
    resolutions.resolve(["numpy"], **SETTINGS)
    resolutions.resolve(["numpy"], upgrade=True, **SETTINGS)
    resolutions.resolve(["numpy"], upgrade_packages=("numpy",), **SETTINGS)
    assert len(uv.asked) == 3
    assert uv.asked[1]["upgrade"] is True
    assert uv.asked[2]["upgrade_packages"] == ("numpy",)


def test_an_unreadable_entry_or_a_failure_is_not_an_answer() -> None:
    resolutions, uv, _, memory = make()
    resolutions.resolve(["numpy"], **SETTINGS)
    for key in memory.values:
        memory.values[key] = "{not json"
    assert resolutions.resolve(["numpy"], **SETTINGS) == (NUMPY,)
    assert len(uv.asked) == 2

    def fails(requirements: Any, **settings: Any) -> tuple[PythonPackage, ...]:
        raise RuntimeError("unresolvable")

    failing = Resolutions(memory, fails, lambda: "0.13.9")
    with pytest.raises(RuntimeError):
        failing.resolve(["pandas"], **SETTINGS)
    remembered = [k for k in memory.values if k.startswith("resolution:")]
    assert len(remembered) == 1  # nothing remembered for pandas


def test_only_the_newest_answers_are_remembered() -> None:
    from envd.services.resolutions import KEEP, KEY_PREFIX

    memory, uv = Memory(), Uv()
    resolutions = Resolutions(memory, uv.resolve, lambda: uv.uv)
    for i in range(KEEP + 10):
        resolutions.resolve([f"pkg{i}"])
    remembered = [k for k in memory.values if k.startswith(KEY_PREFIX)]
    assert len(remembered) == KEEP
    resolutions.resolve([f"pkg{KEEP + 9}"])  # the newest is still there: not asked again
    assert len(uv.asked) == KEEP + 10
    resolutions.resolve(["pkg0"])  # the oldest was forgotten: asked again
    assert len(uv.asked) == KEEP + 11
