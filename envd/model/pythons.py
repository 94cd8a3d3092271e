"""The Pythons envd can build (one per Debian suite), and the words for choosing among them.

Pure. `python: auto` in envd.yaml leaves the choice to `envctl lock`, which tries these newest
first (envd.services.python_choice); `python: "3"` means the newest of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

AUTO = "auto"  # `python: auto`: the lock picks the newest Python whose wheels fit every pin


@dataclass(frozen=True)
class Buildable:
    """A Python envd builds from Debian: the suite, its Python (minor, exact) and its glibc."""

    suite: str
    python: str  # "3.11"
    version: str  # "3.11.2", what the suite ships
    glibc: str  # "2.36"

    def platform(self, arch: str) -> str:
        """The manylinux tag a wheel must match on this suite, e.g. manylinux_2_36_x86_64."""
        major, minor = self.glibc.split(".")
        return f"manylinux_{major}_{minor}_{arch}"

    @property
    def words(self) -> str:
        return f"Python {self.python} (debian {self.suite})"


# Newest first: the order `python: auto` tries them in. (adopt.SUITES names the same suites.)
BUILDABLE: tuple[Buildable, ...] = (
    Buildable("trixie", "3.13", "3.13.5", "2.41"),
    Buildable("bookworm", "3.11", "3.11.2", "2.36"),
    Buildable("bullseye", "3.9", "3.9.2", "2.31"),
)
# Minor versions a pin's wheels are looked for in, to say which Pythons a pin would work with.
KNOWN_MINORS: tuple[str, ...] = tuple(f"3.{m}" for m in range(6, 15))


def buildable_for(python: str) -> Buildable | None:
    """The suite that builds `python` ("3" is the newest; "3.9" or "3.9.2" by minor)."""
    if python.strip() == "3":
        return BUILDABLE[0]
    minor = ".".join(python.strip().split(".")[:2])
    return next((b for b in BUILDABLE if b.python == minor), None)


def _key(minor: str) -> tuple[int, ...]:
    return tuple(int(x) for x in minor.split("."))


def span(minors: Sequence[str]) -> str:
    """ "3.8-3.10" for consecutive minors, "3.6, 3.8" otherwise; "" for none."""
    ordered = sorted(set(minors), key=_key)
    if not ordered:
        return ""
    runs: list[list[str]] = [[ordered[0]]]
    for minor in ordered[1:]:
        known = KNOWN_MINORS.index(runs[-1][-1]) if runs[-1][-1] in KNOWN_MINORS else -2
        if minor in KNOWN_MINORS and KNOWN_MINORS.index(minor) == known + 1:
            runs[-1].append(minor)
        else:
            runs.append([minor])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def or_list(items: Sequence[str]) -> str:
    """ "a", "a or b", "a, b or c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def chosen_text(chosen: Buildable, rejected: Sequence[tuple[Buildable, str]]) -> str:
    """What `envctl lock` says when it picked a Python for `python: auto`."""
    if not rejected:
        return (
            f"chose {chosen.words} for `python: auto`: the newest Python envd can build, and "
            "every pin has a wheel for it"
        )
    return f"chose {chosen.words} for `python: auto`: {rejected_text(rejected)}"


def rejected_text(rejected: Sequence[tuple[Buildable, str]]) -> str:
    """ "numpy==1.22.4 has no wheel for 3.13 or 3.11" (one clause per reason)."""
    by_reason: dict[str, list[str]] = {}
    for buildable, reason in rejected:
        by_reason.setdefault(reason, []).append(buildable.python)
    return "; ".join(f"{reason} for {or_list(minors)}" for reason, minors in by_reason.items())


def alternatives_hint(
    pin: str, wheel_minors: Sequence[str], working: Sequence[Buildable], *, auto: bool
) -> str:
    """The hint naming the Pythons (and bases) that would work with the pins."""
    parts: list[str] = []
    if working:
        bases = ", ".join(f"{b.python} (base: {{debian: {b.suite}}})" for b in working)
        parts.append(f"envd can build {bases}")
        if not auto:
            parts[-1] += " (or write `python: auto` with no `base:`, and `envctl lock` chooses)"
    newest = sorted(wheel_minors, key=_key)[-1] if wheel_minors else ""
    if newest and newest not in {b.python for b in working}:
        image = f'base: {{image: python:{newest}-slim}} with `python: "{newest}"`'
        if working:
            parts.append(f"use {image}")
        else:
            builds = or_list([b.python for b in BUILDABLE]).replace(" or ", " and ")
            parts.append(f"envd builds Python {builds} only: use {image}")
    if pin and not wheel_minors:
        parts.append(
            f"pick a version of {pin.split('==')[0]} with wheels for a Python envd can build, "
            f"or add `build: {{from_source: [{pin.split('==')[0]}]}}` to envd.yaml"
        )
    return "; or ".join(parts) if parts else "change the pins, or pick another base"


def wheels_text(pin: str, wheel_minors: Sequence[str]) -> str:
    """ "numpy==1.22.4 has wheels for Python 3.8-3.10" (or that it has none for 3.6-3.14)."""
    if not wheel_minors:
        return f"{pin} has no wheel for any Python from {KNOWN_MINORS[0]} to {KNOWN_MINORS[-1]}"
    return f"{pin} has wheels for Python {span(wheel_minors)}"
