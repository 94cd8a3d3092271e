"""A Pipfile's local packages without a Pipfile.lock (`{path = "sub"}`): installed editable
from the project's files, their own dependencies read statically from their metadata and
locked with the rest; outside the project, refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec
from envd.model import reqfiles as rf
from envd.model.lockfile import PythonPackage, hash_inputs, inputs_from_spec, staleness
from envd.services.planning import read_project_inputs
from tests.unit.model.test_plan import lock

SPEC = "base: {debian: bookworm}\npython: '3.11'\nrequirements: Pipfile\n"

PIPFILE = """\
[packages]
requests = "*"
mylib = {path = "./mylib", editable = true}
tools = {path = "tools"}

[dev-packages]
pytest = "*"
"""

MYLIB = '[project]\nname = "mylib"\nversion = "0.1.0"\ndependencies = ["six>=1.16", "tools"]\n'
TOOLS = (
    "from setuptools import setup\nsetup(name='tools', version='1.0', install_requires=['attrs'])\n"
)


def project(tmp_path: Path, **files: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "envd.yaml").write_text(SPEC)
    for name, text in {"Pipfile": PIPFILE, **files}.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_pipfile_path_inside_is_a_member_and_a_built_file_is_left_out() -> None:
    parsed = rf.parse_pipfile(PIPFILE)
    assert parsed.members == ("mylib", "tools")
    assert parsed.requirements == ("requests",) and parsed.warnings == ()
    # `tools` is not marked editable: installed editable all the same, saying so
    said = "Pipfile:4: `tools` (local folder `tools`, not editable there) is installed editable"
    assert [note for note in parsed.notes if said in note]
    wheel = rf.parse_pipfile('[packages]\nd = {path = "dist/d-1.0-py3-none-any.whl"}\n')
    assert wheel.members == () and "left out" in wheel.warnings[0]
    with pytest.raises(SpecError, match=r"`d`: path `\.\./d` is outside the project"):
        rf.parse_pipfile('[packages]\nd = {path = "../d", editable = true}\n')


def test_members_own_dependencies_are_locked_and_watched(tmp_path: Path) -> None:
    root = project(tmp_path, **{"mylib/pyproject.toml": MYLIB, "tools/setup.py": TOOLS})
    spec = load_spec(root)
    assert spec.members == ("mylib", "tools")
    # the Pipfile's own, then each member's; `tools` is a member: not resolved from an index
    assert spec.all_requirements == ("requests", "six>=1.16", "attrs")
    assert {"Pipfile", "mylib/pyproject.toml", "tools/setup.py"} <= set(spec.requirements_files)
    # a changed member dependency makes the lock stale, saying what changed
    before = inputs_from_spec(spec)
    (root / "mylib/pyproject.toml").write_text(MYLIB.replace("six>=1.16", "six>=1.17"))
    after = inputs_from_spec(load_spec(root))
    assert hash_inputs(before) != hash_inputs(after)
    base = lock(())
    the_lock = replace(base, inputs=before, inputs_hash=hash_inputs(before))
    assert any("six" in reason for reason in staleness(the_lock, after))


def test_the_build_installs_members_whose_dependencies_the_lock_pins(tmp_path: Path) -> None:
    root = project(tmp_path, **{"mylib/pyproject.toml": MYLIB, "tools/setup.py": TOOLS})
    (root / "mylib/src/mylib").mkdir(parents=True)
    (root / "mylib/src/mylib/__init__.py").write_text("")
    inputs = inputs_from_spec(load_spec(root))
    pinned = tuple(
        PythonPackage(name, version, ("sha256:" + digit * 64,))
        for name, version, digit in (("attrs", "25.1.0", "1"), ("six", "1.17.0", "2"))
    )
    base = lock(())
    the_lock = replace(base, inputs=inputs, inputs_hash=hash_inputs(inputs), python=pinned)
    members = read_project_inputs(str(root), the_lock).members
    assert [(m.name, m.source) for m in members] == [("mylib", "mylib/src"), ("tools", "tools")]
    with pytest.raises(SpecError, match=r"`mylib`: the project depends on six"):
        read_project_inputs(str(root), replace(the_lock, python=pinned[:1]))


def test_a_member_whose_dependencies_are_computed_is_refused_with_the_fix(tmp_path: Path) -> None:
    computed = "from setuptools import setup\nsetup(name='t', version='1', install_requires=R)\n"
    root = project(tmp_path, **{"mylib/pyproject.toml": MYLIB, "tools/setup.py": computed})
    with pytest.raises(SpecError, match=r"local package `tools`: .*install_requires") as info:
        load_spec(root)
    assert info.value.file == f"{root}/tools/setup.py"
    assert "Pipfile.lock (`pipenv lock`)" in (info.value.hint or "")
    dynamic = '[project]\nname = "mylib"\nversion = "1"\ndynamic = ["dependencies"]\n'
    (root / "mylib/pyproject.toml").write_text(dynamic)
    with pytest.raises(SpecError, match=r"`mylib` has dynamic dependencies") as info:
        load_spec(root)
    assert info.value.file == f"{root}/mylib/pyproject.toml"
    assert "pipenv lock" in (info.value.hint or "")


def test_a_member_without_metadata_is_refused_naming_it(tmp_path: Path) -> None:
    root = project(tmp_path, **{"mylib/README": "x", "tools/setup.py": TOOLS})
    with pytest.raises(SpecError, match=r"local package `mylib` has no pyproject\.toml"):
        load_spec(root)


def test_a_pipfile_lock_members_dependencies_are_not_read_again(tmp_path: Path) -> None:
    """Pipfile.lock pins its members' dependencies: their metadata is not read at lock."""
    text = '{"_meta": {}, "default": {"mylib": {"editable": true, "path": "./mylib"}}}'
    root = project(tmp_path, **{"Pipfile.lock": text, "mylib/README": "x"})
    (root / "envd.yaml").write_text(SPEC.replace("Pipfile", "Pipfile.lock"))
    spec = load_spec(root)
    assert spec.members == ("mylib",) and spec.all_requirements == ()


def test_a_pyproject_without_project_falls_back_to_setup_py_and_is_watched(tmp_path: Path) -> None:
    build_only = '[build-system]\nrequires = ["setuptools"]\n'
    root = project(
        tmp_path,
        **{
            "mylib/pyproject.toml": MYLIB,
            "tools/pyproject.toml": build_only,
            "tools/setup.py": TOOLS,
        },
    )
    spec = load_spec(root)
    assert spec.all_requirements == ("requests", "six>=1.16", "attrs")
    assert {"tools/pyproject.toml", "tools/setup.py"} <= set(spec.requirements_files)


def test_init_writes_a_loadable_spec_when_a_member_sits_beside_a_git_entry(tmp_path: Path) -> None:
    from envd.model.adopt import adopt

    pipfile = PIPFILE + '\n[packages.attrs]\ngit = "https://github.com/python-attrs/attrs"\n'
    files = {"Pipfile": pipfile, "mylib/pyproject.toml": MYLIB, "tools/setup.py": TOOLS}
    result = adopt(files, "proj", {"base": {"debian": "bookworm"}, "python": "3.11"})
    assert "requirements" not in result.document  # `requirements: Pipfile` refuses git entries
    assert result.document["packages"] == ["requests", "pytest"]
    assert any("mylib, tools left out" in w and "pipenv lock" in w for w in result.warnings)
    assert not any("installed editable" in note for note in result.notes), result.notes
    root = tmp_path / "proj"
    for name, text in {**files, "envd.yaml": result.text}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    load_spec(root)  # it loads
