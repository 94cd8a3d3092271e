"""`python: auto` and the Pythons named when pins do not fit: the choice, with a fake index."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from envd.errors import LockError, SpecError, Unresolvable
from envd.model.adopt import adopt
from envd.model.lockfile import inputs_from_spec
from envd.model.pythons import BUILDABLE, buildable_for, span
from envd.model.spec import Base
from envd.model.spec_parser import parse_spec
from envd.services.python_choice import choose, explain, wheel_minors

ALL = tuple(f"3.{m}" for m in range(6, 15))


class FakeIndex:
    """Which Python minors each pin has wheels for; resolves like uv --only-binary :all:."""

    def __init__(self, wheels: dict[str, Sequence[str]], down: bool = False) -> None:
        self.wheels = wheels
        self.down = down
        self.calls: list[tuple[tuple[str, ...], str, str]] = []

    def __call__(self, requirements: Sequence[str], python: str, platform: str) -> object:
        self.calls.append((tuple(requirements), python, platform))
        if self.down:
            raise LockError("package index https://pypi.org/simple (PyPI) cannot be reached")
        for pin in requirements:
            if python not in self.wheels.get(pin, ALL):
                raise Unresolvable(f"{pin} has no wheel for Python {python}", pin=pin)
        return tuple(requirements)


def test_the_newest_python_is_chosen_when_every_pin_has_wheels_for_it() -> None:
    index = FakeIndex({})
    choice = choose(index, ["requests==2.31.0"], "x86_64")
    assert (choice.chosen.suite, choice.chosen.python) == ("trixie", "3.13")
    assert "newest Python envd can build" in choice.text
    assert index.calls == [(("requests==2.31.0",), "3.13", "manylinux_2_41_x86_64")]


def test_an_old_pin_gets_the_newest_python_it_has_wheels_for_and_says_why() -> None:
    index = FakeIndex({"pyyaml==5.4.1": ("3.6", "3.7", "3.8", "3.9")})
    choice = choose(index, ["requests==2.25.1", "pyyaml==5.4.1"], "x86_64")
    assert (choice.chosen.suite, choice.chosen.python) == ("bullseye", "3.9")
    assert choice.text == (
        "chose Python 3.9 (debian bullseye) for `python: auto`: "
        "pyyaml==5.4.1 has no wheel for 3.13 or 3.11"
    )
    # each Python is tried for its own suite's glibc, newest first
    assert [(c[1], c[2]) for c in index.calls] == [
        ("3.13", "manylinux_2_41_x86_64"),
        ("3.11", "manylinux_2_36_x86_64"),
        ("3.9", "manylinux_2_31_x86_64"),
    ]


def test_different_pins_failing_on_different_pythons_are_each_named() -> None:
    index = FakeIndex({"a==1": ("3.9", "3.11"), "b==1": ("3.9", "3.13")})
    choice = choose(index, ["a==1", "b==1"], "aarch64")
    assert choice.chosen.python == "3.9"
    assert choice.text.endswith("a==1 has no wheel for 3.13; b==1 has no wheel for 3.11")
    assert index.calls[0][2] == "manylinux_2_41_aarch64"


def test_no_python_envd_builds_fits_names_the_pythons_the_pin_has_wheels_for() -> None:
    index = FakeIndex({"numpy==1.19.5": ("3.6", "3.7", "3.8")})
    with pytest.raises(LockError) as info:
        choose(index, ["numpy==1.19.5"], "x86_64")
    assert "no Python envd can build (3.13, 3.11 or 3.9) has wheels" in info.value.message
    assert "numpy==1.19.5 has no wheel for 3.13, 3.11 or 3.9" in info.value.message
    assert "numpy==1.19.5 has wheels for Python 3.6-3.8" in info.value.message
    assert info.value.hint == (
        "envd builds Python 3.13, 3.11 and 3.9 only: use base: {image: python:3.8-slim} with "
        '`python: "3.8"`'
    )


def test_a_pin_with_no_wheel_for_any_python_says_so_and_names_building_it() -> None:
    index = FakeIndex({"numpy==1.11.0": ()})
    with pytest.raises(LockError) as info:
        choose(index, ["numpy==1.11.0"], "x86_64")
    assert "numpy==1.11.0 has no wheel for any Python from 3.6 to 3.14" in info.value.message
    assert info.value.hint is not None and "from_source: [numpy]" in info.value.hint


def test_an_unreachable_index_is_not_taken_for_a_python_that_does_not_fit() -> None:
    index = FakeIndex({}, down=True)
    with pytest.raises(LockError, match="cannot be reached") as info:
        choose(index, ["requests"], "x86_64")
    assert not isinstance(info.value, Unresolvable)
    assert len(index.calls) == 1  # stopped at the first: no other Python was guessed at


def test_a_fixed_python_that_cannot_work_names_the_pythons_and_bases_that_would() -> None:
    index = FakeIndex({"numpy==1.22.4": ("3.8", "3.9", "3.10")})
    error = Unresolvable("numpy==1.22.4 has no wheel for Python 3.11.2", pin="numpy==1.22.4")
    out = explain(error, index, ["numpy==1.22.4", "requests"], "3.11.2", "x86_64")
    assert out.message.startswith(
        "numpy==1.22.4 has wheels for Python 3.8-3.10, not for the project's Python 3.11.2"
    )
    assert out.hint is not None
    assert "envd can build 3.9 (base: {debian: bullseye})" in out.hint
    assert "use base: {image: python:3.10-slim}" in out.hint
    assert "python: auto" in out.hint
    # every pin is tried on the other Pythons envd builds (not again on the project's own)
    assert [c[1] for c in index.calls if len(c[0]) == 2] == ["3.13", "3.9"]


def test_a_conflict_no_other_python_solves_keeps_uvs_own_error() -> None:
    index = FakeIndex({"a==1": ()})
    error = Unresolvable("cannot resolve a for Python 3.11.2:\n  a==1 conflicts with b")
    assert explain(error, index, ["a==1"], "3.11", "x86_64") is error


def test_wheel_minors_and_their_span() -> None:
    index = FakeIndex({"x==1": ("3.6", "3.7", "3.10")})
    assert wheel_minors(index, "x==1", "x86_64") == ["3.6", "3.7", "3.10"]
    assert span(["3.6", "3.7", "3.10"]) == "3.6-3.7, 3.10"
    assert span(["3.8", "3.9", "3.10"]) == "3.8-3.10"


def test_python_3_is_the_newest_envd_builds_and_names_the_base() -> None:
    assert buildable_for("3") == BUILDABLE[0]
    assert buildable_for("3.9.2") == BUILDABLE[2]
    assert buildable_for("3.12") is None


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_spec(text, source="envd.yaml", project_dir="/p/proj")


def test_envd_yaml_python_3_without_a_base_builds_the_newest_suite() -> None:
    spec = parse('python: "3"\n')
    assert spec.base == Base(debian="trixie")
    assert spec.python == "3"
    assert parse('python: "3.9"\n').base == Base(debian="bullseye")
    # with a base, "3" accepts any Python 3 the base has
    assert parse('base: {debian: bookworm}\npython: "3"\n').base == Base(debian="bookworm")


def test_envd_yaml_python_auto_leaves_the_base_to_the_lock() -> None:
    spec = parse("python: auto\npackages: [pyyaml==5.4.1]\n")
    assert spec.python == "auto"
    assert spec.base == Base()
    assert inputs_from_spec(spec).base == "auto"


def test_envd_yaml_python_auto_with_a_base_is_refused() -> None:
    with pytest.raises(SpecError, match="python: auto"):
        parse("python: auto\nbase: {image: python:3.9-slim}\n")


def test_init_with_no_python_writes_python_auto_with_a_comment_that_parses_back() -> None:
    adopted = adopt({"requirements.txt": "PyYAML==5.4.1\n"}, "old-project")
    assert "base" not in adopted.document
    line = next(x for x in adopted.text.splitlines() if x.startswith("python:"))
    assert line.startswith("python: auto  # ") and "envctl lock" in line
    spec = parse_spec(adopted.text, source="envd.yaml", project_dir="/p/old-project")
    assert (spec.python, spec.base) == ("auto", Base())


def test_the_buildable_pythons_are_the_suites_init_knows() -> None:
    from envd.model.adopt import _SUITE_PYTHONS, SUITES

    assert {(b.suite, b.python) for b in BUILDABLE} == set(SUITES)
    assert {b.suite: b.version for b in BUILDABLE} == _SUITE_PYTHONS
    assert [b.python for b in BUILDABLE] == ["3.13", "3.11", "3.9"]  # newest first
