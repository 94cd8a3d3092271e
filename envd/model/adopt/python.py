"""The base and the Python `adopt` writes, from the Python versions and constraints found."""

from __future__ import annotations

from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envd.errors import SpecError
from envd.model import reqfiles
from envd.model.adopt.found import DEFAULT_SUITE, SUITES, _Found
from envd.model.pythons import AUTO, buildable_for

_SUITE_PYTHONS = {"bookworm": "3.11.2", "trixie": "3.13.5", "bullseye": "3.9.2"}


def _minor(version: str) -> str | None:
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else None


def _suites_text() -> str:
    return ", ".join(f"{suite} {python}" for suite, python in _by_python())


def _by_python() -> list[tuple[str, str]]:
    return sorted(SUITES, key=lambda s: tuple(int(x) for x in s[1].split(".")))


def _choose_base(found: _Found, root: str, *, at: int) -> None:
    """Base and python from the versions found; its notes go first (at index `at`)."""
    notes, found.notes = found.notes, []
    try:
        _choose(found, root)
    finally:
        found.notes = notes[:at] + found.notes + notes[at:]


def _choose(found: _Found, root: str) -> None:
    exact = [(v, src) for v, src in found.pythons if _minor(v)]
    for version, source in exact[1:]:
        if _minor(version) != _minor(exact[0][0]):
            found.warnings.append(
                f"{source} asks for Python {version}, {exact[0][1]} for {exact[0][0]}; "
                f"took {exact[0][0]} from {exact[0][1]}"
            )
    ranges = []
    for spec, source in found.python_ranges:
        try:
            ranges.append((SpecifierSet(spec), spec, source))
        except InvalidSpecifier:
            found.warnings.append(f"{source}: Python constraint `{spec}` not understood; ignored")
    if "base" in found.doc:  # an image: its interpreter is checked when locking
        if exact:
            found.doc["python"] = _minor(exact[0][0])
            found.notes.append(f"took python {found.doc['python']} from {exact[0][1]}")
        return
    if exact:
        version, source = exact[0]
        minor = _minor(version)
        suite = next((s for s, p in SUITES if p == minor), None)
        if suite is None:
            raise SpecError(
                f"Python {version} (from {source}) is not the Python of any Debian suite envd "
                f"builds from: {_suites_text()}",
                file=reqfiles.shown(root, source),
                hint=f"write `base: {{image: python:{minor}-slim}}` in envd.yaml, or ask for "
                f"Python {', '.join(p for _, p in _by_python())} in {source}",
            )
        found.doc["base"] = {"debian": suite}
        found.doc["python"] = minor
        patch = (
            f" (asked {version}; {suite} ships {_SUITE_PYTHONS[suite]})" if version != minor else ""
        )
        found.notes.append(f"took python {minor} from {source}: base debian {suite}{patch}")
        for specifier, spec, where in ranges:
            if not specifier.contains(_SUITE_PYTHONS[suite]):
                found.warnings.append(
                    f"{where} requires Python {spec}, but {source} asks for {version}"
                )
        return
    if not ranges:
        return
    for suite, minor in SUITES:
        if all(s.contains(_SUITE_PYTHONS[suite]) for s, _, _ in ranges):
            found.doc["base"] = {"debian": suite}
            found.doc["python"] = minor
            sources = ", ".join(f"{spec} in {where}" for _, spec, where in ranges)
            found.notes.append(f"chose python {minor} (base debian {suite}) for {sources}")
            return
    _, spec, source = ranges[0]
    fits = next(
        (f"3.{m}" for m in range(8, 16) if all(s.contains(f"3.{m}.0") for s, _, _ in ranges)),
        None,
    )
    raise SpecError(
        f"no Debian suite envd builds from has a Python that satisfies `{spec}` ({_suites_text()})",
        file=reqfiles.shown(root, source),
        hint=f"write `base: {{image: python:{fits}-slim}}` in envd.yaml"
        if fits
        else "widen requires-python",
    )


def _python_auto(document: dict[str, Any], notes: list[str]) -> None:
    """No base and no Python found: `python: auto`, which `envctl lock` settles (a named
    Python with no base keeps the default suite, as before)."""
    if "base" in document:
        return
    if "python" not in document:
        document["python"] = AUTO
        notes.append(
            "no Python version found: python auto (`envctl lock` picks the newest Python envd "
            "can build that every pin has wheels for)"
        )
        return
    buildable = buildable_for(str(document["python"]))
    suite = buildable.suite if buildable else DEFAULT_SUITE
    document["base"] = {"debian": suite}
    why = f"the suite of Python {document['python']}" if buildable else "the default"
    notes.append(f"no base found: base debian {suite}, {why}")
