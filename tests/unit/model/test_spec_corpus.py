"""Every malformed envd.yaml in tests/specs/bad is refused with its line and a clear message.

Each case starts with its expectations, one comment line each:

    # expect-line: N        the line the error names
    # expect: TEXT          a piece of the message (or hint)
    # expect-key: PATH      the key path the error names ("(top)" for the document itself)
    # dir: NAME             optional: the project directory's name (for the `name:` default)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec

CORPUS = Path(__file__).resolve().parents[2] / "specs"
BAD = sorted((CORPUS / "bad").glob("*.yaml"))


def expectations(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in path.read_bytes().decode("utf-8", "replace").split("\n")[:4]:
        for key in ("expect-line", "expect", "expect-key", "dir"):
            prefix = f"# {key}:"
            if raw.startswith(prefix):
                out[key] = raw.removeprefix(prefix).strip()
    assert {"expect-line", "expect", "expect-key"} <= out.keys(), f"{path}: bad header"
    return out


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 80


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_spec_is_refused_with_line(path: Path, tmp_path: Path) -> None:
    expect = expectations(path)
    project = tmp_path / expect.get("dir", "project")
    project.mkdir()
    shutil.copy(path, project / "envd.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(project)
    err = info.value
    assert err.exit_code == 1
    assert err.file == str(project / "envd.yaml")
    assert err.line == int(expect["expect-line"]), str(err)
    assert err.key_path == expect["expect-key"], str(err)
    assert expect["expect"] in str(err), str(err)
    assert f"{project / 'envd.yaml'}:{err.line}: {err.key_path}: " in str(err)


def test_bad_requirement_line_points_into_requirements_file(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "bad-requirements", tmp_path / "p")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p")
    assert info.value.file == str(tmp_path / "p" / "requirements.txt")
    assert info.value.line == 4
    assert "not a requirement!!" in str(info.value)


def test_a_missing_include_names_the_including_file_and_line(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "option-requirements", tmp_path / "p")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "p")
    assert info.value.file == str(tmp_path / "p" / "requirements.txt")
    assert info.value.line == 2
    assert "`other.txt` does not exist" in str(info.value)
    assert info.value.hint and "relative to the file" in info.value.hint


def test_an_include_is_read_relative_to_the_including_file(tmp_path: Path) -> None:
    shutil.copytree(CORPUS / "option-requirements", tmp_path / "p")
    (tmp_path / "p" / "other.txt").write_text("six==1.16.0\n")
    spec = load_spec(tmp_path / "p")
    assert spec.requirements == ("numpy", "six==1.16.0")
