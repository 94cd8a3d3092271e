"""Every fuzz target (tests/fuzz) replays its seed corpus, crash reproducers included
(`crash-*`, `timeout-*`): each input parses or is refused with an EnvdError, and the harness
finds every target. No atheris here; `make fuzz` does the coverage-guided runs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from envd.errors import EnvdError
from tests.fuzz import run

CORPUS = Path(run.__file__).parent / "corpus"
MINE = ("lockfile", "pyproject", "reqformats", "requirements", "spec", "uvlock")


def test_the_harness_finds_every_target() -> None:
    assert set(MINE) <= set(run.discover())


def _inputs() -> list[tuple[str, Path]]:
    return [
        (name, path)
        for name in run.discover()
        if (CORPUS / name).is_dir()
        for path in sorted((CORPUS / name).iterdir())
    ]


@pytest.mark.parametrize(
    ("name", "path"), _inputs(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_every_seed_parses_or_is_refused(name: str, path: Path) -> None:
    target = importlib.import_module(f"tests.fuzz.fuzz_{name}").target
    try:
        target(path.read_bytes())
    except EnvdError:
        pass
