"""Which Python a project's pins can use: `python: auto`, and the error when a fixed one cannot.

The resolver is passed in (the locker hands uv's; unit tests a fake), called as
`resolve(requirements, python_version, platform)`; it raises Unresolvable when the pins have no
solution with wheels for that Python, and any other error when it cannot tell (the network).
Each try is a resolution on the host: no base is built for a Python that is not chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envd.errors import LockError, Unresolvable
from envd.model.pythons import (
    BUILDABLE,
    KNOWN_MINORS,
    Buildable,
    alternatives_hint,
    chosen_text,
    or_list,
    rejected_text,
    wheels_text,
)

# (requirements, python version, wheel platform tag) -> anything; raises Unresolvable.
Resolve = Callable[[Sequence[str], str, str], object]


@dataclass(frozen=True)
class Choice:
    chosen: Buildable
    rejected: tuple[tuple[Buildable, str], ...]  # the newer ones, and why each did not fit

    @property
    def text(self) -> str:
        return chosen_text(self.chosen, self.rejected)


def choose(resolve: Resolve, requirements: Sequence[str], arch: str) -> Choice:
    """The newest Python envd can build for which every pin resolves with wheels.

    Raises LockError naming, for the first pin with no wheel, the Pythons it has wheels for.
    """
    rejected: list[tuple[Buildable, str]] = []
    errors: list[Unresolvable] = []
    for buildable in BUILDABLE:
        try:
            resolve(requirements, buildable.python, buildable.platform(arch))
        except Unresolvable as exc:
            rejected.append((buildable, _reason(exc)))
            errors.append(exc)
            continue
        return Choice(buildable, tuple(rejected))
    pin = next((e.pin for e in errors if e.pin), "")
    tried = or_list([b.python for b in BUILDABLE])
    if not pin:  # no wheel is to blame (a conflict, a name not on the index): uv's own words
        first = errors[0]
        raise LockError(
            f"`python: auto`: the requirements resolve for none of the Pythons envd can build "
            f"({tried}); for {BUILDABLE[0].python}: {first.message}",
            hint=first.hint,
        )
    minors = wheel_minors(resolve, pin, arch)
    why = rejected_text(rejected)
    raise LockError(
        f"`python: auto`: no Python envd can build ({tried}) has wheels for every pin: {why}; "
        + wheels_text(pin, minors),
        hint=alternatives_hint(pin, minors, [], auto=True),
    )


def explain(
    error: Unresolvable, resolve: Resolve, requirements: Sequence[str], python: str, arch: str
) -> LockError:
    """The error for pins that do not resolve for the project's own Python (`python`): it
    names the Pythons the failing pin has wheels for, and the bases envd can build that work."""
    minor = ".".join(python.split(".")[:2])
    working = []
    for buildable in BUILDABLE:
        if buildable.python == minor:
            continue
        try:
            resolve(requirements, buildable.python, buildable.platform(arch))
        except Unresolvable:
            continue
        working.append(buildable)
    minors = wheel_minors(resolve, error.pin, arch) if error.pin else []
    if not working and not error.pin:
        return error  # a conflict no other Python solves: uv's explanation says it all
    message = error.message
    if error.pin:  # say first which Pythons the pin has wheels for, then uv's explanation
        headline = wheels_text(error.pin, minors)
        if minors:
            headline += f", not for the project's Python {python}"
        rest = message.partition("\n")[2]
        message = f"{headline} (envd builds nothing from source unless envd.yaml says so)" + (
            f":\n{rest}" if rest else ""
        )
    return LockError(message, hint=alternatives_hint(error.pin, minors, working, auto=False))


def wheel_minors(resolve: Resolve, pin: str, arch: str) -> list[str]:
    """The Python minors (3.6 to 3.14) for which `pin` alone resolves with wheels."""
    platform = BUILDABLE[0].platform(arch)  # the newest glibc: older manylinux wheels fit it
    found = []
    for minor in KNOWN_MINORS:
        try:
            resolve([pin], minor, platform)
        except Unresolvable:
            continue
        found.append(minor)
    return found


def _reason(error: Unresolvable) -> str:
    return f"{error.pin} has no wheel" if error.pin else "the requirements have no solution"
