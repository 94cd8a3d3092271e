"""Every malformed envd.yaml in tests/specs/bad is refused with its line and a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec

CORPUS = Path(__file__).resolve().parent.parent / "specs"
BAD = sorted((CORPUS / "bad").glob("*.yaml"))


def expectations(path: Path) -> tuple[int, str]:
    lines = path.read_text().splitlines()
    line = int(lines[0].removeprefix("# expect-line:").strip())
    expect = lines[1].removeprefix("# expect:").strip()
    return line, expect


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_spec_is_refused_with_line(path: Path, tmp_path: Path) -> None:
    line, expect = expectations(path)
    shutil.copy(path, tmp_path / "envd.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    err = info.value
    assert err.line == line, str(err)
    assert expect in str(err)
    assert str(tmp_path / "envd.yaml") in str(err)


def test_bad_requirement_line_points_into_requirements_file(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "bad-requirements", tmp_path / "p")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p")
    assert info.value.file == "requirements.txt"
    assert info.value.line == 4
    assert "not a requirement!!" in str(info.value)


def test_options_in_requirements_file_are_refused(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "option-requirements", tmp_path / "p")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p")
    assert info.value.line == 2
    assert "`-r`" in str(info.value)
    assert info.value.hint and "indexes" in info.value.hint
