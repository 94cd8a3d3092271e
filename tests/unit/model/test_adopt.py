"""`envctl init` on real projects: every case in tests/adopt gives its expected envd.yaml or error.

A case is tests/adopt/<name>/ with the project's files under in/, and either expected.yaml (the
envd.yaml adopt must write, compared as data) or error.txt (lines the error must contain);
notes.txt lists lines that must appear among the notes and warnings; template.yaml, if there,
is the template merged under the project's files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from envd.errors import SpecError
from envd.model.adopt import Adopted, adopt, render
from envd.model.spec_parser import parse_spec

CORPUS = Path(__file__).resolve().parents[2] / "adopt"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir())


def project_files(case: Path) -> dict[str, str]:
    base = case / "in"
    return {
        p.relative_to(base).as_posix(): p.read_text()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def run(case: Path) -> Adopted:
    template_path = case / "template.yaml"
    template = yaml.safe_load(template_path.read_text()) if template_path.exists() else None
    return adopt(project_files(case), case.name, template, root=f"/projects/{case.name}")


def lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_corpus_is_large_and_covers_every_format() -> None:
    assert len(CASES) >= 25
    names = {Path(p).name for case in CASES for p in project_files(case)}
    for name in (
        "requirements.txt",
        "pyproject.toml",
        "uv.lock",
        "Pipfile.lock",
        "pylock.toml",
        "Pipfile",
        "environment.yml",
        "apt.txt",
        "runtime.txt",
        ".python-version",
        "postBuild",
        "devcontainer.json",
        "cog.yaml",
        "constraints.txt",
    ):
        assert name in names, name
    assert sum((case / "error.txt").exists() for case in CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path) -> None:
    expected_path, error_path = case / "expected.yaml", case / "error.txt"
    assert expected_path.exists() != error_path.exists(), "a case has expected.yaml or error.txt"
    if error_path.exists():
        with pytest.raises(SpecError) as info:
            run(case)
        for line in lines(error_path):
            assert line in str(info.value), str(info.value)
        return
    result = run(case)
    document = yaml.safe_load(result.text)
    assert document == yaml.safe_load(expected_path.read_text()), result.text
    assert document == dict(result.document)
    assert result.text.startswith("# Written by `envctl init`")
    said = [*result.notes, *result.warnings]
    for line in lines(case / "notes.txt"):
        assert any(line in note for note in said), f"{line!r} not in {said}"
    assert run(case) == result  # same files, same output


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_output_is_a_valid_spec_read_with_the_project_files(case: Path) -> None:
    if not (case / "expected.yaml").exists():
        pytest.skip("an error case")
    result = run(case)
    files = project_files(case)

    def read_text(relpath: str) -> str:
        if relpath not in files:
            raise FileNotFoundError(relpath)
        return files[relpath]

    spec = parse_spec(
        result.text,
        source="envd.yaml",
        project_dir=f"/p/{case.name}",
        read_text=read_text,
        is_file=files.__contains__,
    )
    assert spec.name == case.name
    named = result.document.get("requirements", [])
    named = [named] if isinstance(named, str) else named
    assert spec.requirements_files[: len(named)] == tuple(named)  # then the files they include
    if named:  # every file adopt names is read: its requirements (or pins) reach the spec
        assert spec.requirements or spec.pins or spec.constraints, result.text


def test_template_keys_are_overridden_and_lists_merged() -> None:
    template = {
        "base": {"debian": "bookworm"},
        "python": "3.11",
        "packages": ["numpy", "pandas"],
        "env": {"A": "1", "B": "2"},
        "runs": {"metrics": ["metrics.json"]},
    }
    files = {
        "runtime.txt": "python-3.13\n",
        "environment.yml": "dependencies:\n  - pandas\n  - scipy\n",
        ".devcontainer/devcontainer.json": '{"containerEnv": {"B": "3"}}',
    }
    result = adopt(files, "Proj", template)
    doc = dict(result.document)
    assert doc["base"] == {"debian": "trixie"}
    assert doc["python"] == "3.13"
    assert doc["packages"] == ["numpy", "pandas", "scipy"]
    assert doc["env"] == {"A": "1", "B": "3"}
    assert doc["runs"] == {"metrics": ["metrics.json"]}
    assert list(doc)[:4] == ["version", "name", "base", "python"]
    assert list(doc)[-1] == "runs"
    assert template["packages"] == ["numpy", "pandas"]  # the template is not changed


def test_an_image_from_the_project_drops_the_templates_python() -> None:
    files = {".devcontainer.json": '{"image": "ghcr.io/org/img:1"}'}
    doc = adopt(files, "p", {"base": {"debian": "bookworm"}, "python": "3.11"}).document
    assert doc["base"] == {"image": "ghcr.io/org/img:1"}
    assert "python" not in doc


def test_render_quotes_what_yaml_would_misread() -> None:
    text = render({"python": "3.10", "a": "yes", "b": "x: y", "c": "# no", "d": ["on", 8888]})
    assert yaml.safe_load(text) == {
        "python": "3.10",
        "a": "yes",
        "b": "x: y",
        "c": "# no",
        "d": ["on", 8888],
    }


def test_name_comes_from_the_directory() -> None:
    assert adopt({}, "My Project!").document["name"] == "my-project"
    assert adopt({}, "___").document["name"] == "project"
    assert adopt({}, "a__b.c").document["name"] == "a__b.c"
    assert adopt({}, "Data._.Science--2").document["name"] == "data-science-2"
    assert len(str(adopt({}, "x" * 300).document["name"])) == 128


def test_conflicting_python_versions_are_warned_about() -> None:
    files = {
        "runtime.txt": "python-3.11\n",
        ".python-version": "3.13\n",
        "pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.12"\n',
    }
    result = adopt(files, "p")
    assert result.document["python"] == "3.11"
    assert any(".python-version asks for Python 3.13" in w for w in result.warnings)
    assert any("pyproject.toml requires Python >=3.12" in w for w in result.warnings)


def test_python_versions_pick_the_suite() -> None:
    for python, suite in (("3.9", "bullseye"), ("3.11.4", "bookworm"), ("3.13", "trixie")):
        doc = adopt({".python-version": python}, "p").document
        assert doc["base"] == {"debian": suite}
        assert doc["python"] == python[:4]
    with pytest.raises(SpecError) as info:
        adopt({".python-version": "3.12"}, "p", root="/r")
    assert info.value.file == "/r/.python-version"
    assert info.value.hint and "python:3.12-slim" in info.value.hint


# ---------------------------------------------------------------- the init service


def test_init_adopts_the_directorys_files_with_their_includes(tmp_path: Path) -> None:
    from envd.gateways.projectfiles import load_spec
    from envd.services.adoption import Adoption

    project = tmp_path / "churn"
    (project / "reqs").mkdir(parents=True)
    (project / "requirements.txt").write_text("-r reqs/base.txt\nidna>=3\n")
    (project / "reqs" / "base.txt").write_text("six==1.16.0 --hash=sha256:" + "a" * 64 + "\n")
    (project / "runtime.txt").write_text("python-3.11\n")
    result = Adoption().adopt_into(project)
    assert result is not None and result.path == project / "envd.yaml"
    assert result.path.read_text() == result.text
    assert "requirements.txt" in result.files and "reqs/base.txt" in result.files
    assert any("runtime.txt" in note for note in result.notes), result.notes
    spec = load_spec(project)
    assert spec.requirements == ("six==1.16.0", "idna>=3")
    assert spec.pins[0].sha256 == ("a" * 64,)
    assert (spec.base.debian, spec.python) == ("bookworm", "3.11")


def test_init_merges_a_template_and_never_overwrites(tmp_path: Path) -> None:
    from envd.errors import Conflict
    from envd.services.adoption import Adoption

    project = tmp_path / "p"
    project.mkdir()
    (project / "requirements.txt").write_text("six\n")
    result = Adoption().adopt_into(project, "sklearn")
    assert result is not None
    document = yaml.safe_load(result.text)
    assert document["requirements"] == "requirements.txt"
    assert any("scikit-learn" in p for p in document["packages"]), document
    before = result.path.read_text()
    with pytest.raises(Conflict, match="never overwrites"):
        Adoption().adopt_into(project)
    assert result.path.read_text() == before


def test_init_without_environment_files_leaves_it_to_the_template(tmp_path: Path) -> None:
    from envd.services.adoption import Adoption

    (tmp_path / "README.md").write_text("hello\n")
    assert Adoption().adopt_into(tmp_path) is None
    assert Adoption().adopt_into(tmp_path / "missing") is None
    assert not (tmp_path / "envd.yaml").exists()


def test_init_refuses_files_it_cannot_take_and_writes_nothing(tmp_path: Path) -> None:
    from envd.services.adoption import Adoption

    (tmp_path / "requirements.txt").write_text("six\nx @ git+https://h/x\n")
    with pytest.raises(SpecError) as info:
        Adoption().adopt_into(tmp_path)
    assert (info.value.file, info.value.line) == (str(tmp_path / "requirements.txt"), 2)
    assert not (tmp_path / "envd.yaml").exists()


def test_init_reads_only_environment_files_and_their_includes(tmp_path: Path) -> None:
    from envd.services.adoption import read_environment_files

    (tmp_path / "start").mkdir()  # a folder of that name is not repo2docker's start script
    (tmp_path / "postBuild").write_text("#!/bin/sh\npython -c . && sh -c data\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "environment.yml").write_text(
        "dependencies:\n  - python=3.11\n  - pip:\n    - -r reqs/pip.txt\n"
    )
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "pip.txt").write_text("-c ../c.txt\nsix\n")
    (tmp_path / "c.txt").write_text("six<2\n")
    (tmp_path / "notes.txt").write_text("not read\n")
    files = read_environment_files(tmp_path)
    assert sorted(files) == ["c.txt", "environment.yml", "postBuild", "reqs/pip.txt"]


@pytest.mark.parametrize(
    ("line", "runs"),
    [
        ("npm install --global configurable-http-proxy", True),
        ("cd js && npx webpack", True),
        ("if true; then node build.js; fi", True),
        ("node", True),
        ("# npm install is not needed", False),
        ("rm -rf node_modules", False),
        ("pip install nodeenv", False),
        ("echo npm-shrinkwrap.json", False),
    ],
)
def test_a_postbuild_that_runs_node_adds_nodejs_and_npm(line: str, runs: bool) -> None:
    result = adopt({"postBuild": f"#!/bin/bash\nset -e\n{line}\n"}, "p")
    assert ("system" in result.document) == runs
    if runs:
        assert result.document["system"] == ["nodejs", "npm"]
        assert any(f"postBuild:3 (`{line}`)" in note for note in result.notes), result.notes
