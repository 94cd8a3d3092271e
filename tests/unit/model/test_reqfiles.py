"""Requirement files in every common format: read as their tools read them, errors with lines."""

from __future__ import annotations

import json

import pytest

from envd.errors import SpecError
from envd.model import reqfiles as rf
from envd.model.reqfiles import Pin, SetupStep

A = "a" * 64
B = "b" * 64
C = "c" * 64
ROOT = "/home/u/proj"


def reader(files: dict[str, str]) -> rf.Read:
    return files.get


def req(files: dict[str, str], path: str = "requirements.txt") -> rf.Parsed:
    return rf.parse_requirements(path, reader(files), root=ROOT)


def error(fn: object, *args: object, **kwargs: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value


# ---------------------------------------------------------------- pip requirements files


def test_comments_blank_lines_and_markers() -> None:
    parsed = req(
        {
            "requirements.txt": "# top comment\n\nnumpy>=1.26  # inline\n"
            "pandas ; python_version >= '3.9'\n   # indented comment\n"
        }
    )
    assert parsed.requirements == ("numpy>=1.26", 'pandas; python_version >= "3.9"')
    assert parsed.format == "requirements"
    assert parsed.files == ("requirements.txt",)


def test_hash_after_name_without_space_is_not_a_comment() -> None:
    line = f"pkg @ https://example.com/pkg-1.0-py3-none-any.whl#sha256={A}\n"
    parsed = req({"requirements.txt": line})
    (pin,) = parsed.pins
    assert pin.name == "pkg"
    assert pin.url == f"https://example.com/pkg-1.0-py3-none-any.whl#sha256={A}"
    assert pin.sha256 == (A,)
    assert parsed.requirements == (
        f"pkg @ https://example.com/pkg-1.0-py3-none-any.whl#sha256={A}",
    )


def test_continuations_and_several_hashes_make_one_pin() -> None:
    text = f"torch==2.4.1 \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B}\nrequests\n"
    parsed = req({"requirements.txt": text})
    assert parsed.requirements == ("torch==2.4.1", "requests")
    assert parsed.pins == (Pin(name="torch", version="2.4.1", sha256=(A, B)),)


def test_error_lines_count_physical_lines_after_continuations() -> None:
    text = "numpy \\\n  >=1.26\n\nbad line here!\n"
    err = error(req, {"requirements.txt": text})
    assert err.file == f"{ROOT}/requirements.txt"
    assert err.line == 4
    assert str(err).startswith(f"{ROOT}/requirements.txt:4: `bad line here!` is not a valid")
    assert err.hint and "PEP 508" in err.hint


def test_hashes_need_an_exact_version() -> None:
    err = error(req, {"requirements.txt": f"numpy\nflask>=3 --hash=sha256:{A}\n"})
    assert err.line == 2
    assert "has hashes but no exact version" in str(err)
    assert err.hint and "flask==VERSION" in err.hint


def test_a_hash_that_is_not_sha256_is_refused() -> None:
    err = error(req, {"requirements.txt": "x==1 --hash=md5:abc\n"})
    assert err.line == 1 and "not a sha256 digest" in str(err)


def test_index_options_become_indexes_without_pypi() -> None:
    text = (
        "-i https://pypi.org/simple/\n--extra-index-url https://download.pytorch.org/whl/cpu\n"
        "--extra-index-url=https://example.com/simple/\nnumpy\n"
    )
    parsed = req({"requirements.txt": text})
    assert parsed.indexes == ("https://download.pytorch.org/whl/cpu", "https://example.com/simple")


def test_find_links_is_refused_with_a_fix() -> None:
    err = error(req, {"requirements.txt": "numpy\n--find-links ./wheels\n"})
    assert err.line == 2
    assert f"{ROOT}/requirements.txt:2:" in str(err)
    assert "--find-links ./wheels" in str(err)
    assert err.hint and "--extra-index-url" in err.hint


def test_includes_and_constraints_are_relative_to_the_including_file() -> None:
    files = {
        "requirements.txt": "-r requirements/base.txt\n--requirement=requirements/extra.txt\n",
        "requirements/base.txt": "numpy\n-c ../constraints/pins.txt\n-rnested/more.txt\n",
        "requirements/nested/more.txt": "scipy\n",
        "requirements/extra.txt": "pandas\n",
        "constraints/pins.txt": "numpy<2\n-r shared.txt\n",
        "constraints/shared.txt": "urllib3<3\n",
    }
    parsed = req(files)
    assert parsed.requirements == ("numpy", "scipy", "pandas")
    assert parsed.constraints == ("numpy<2", "urllib3<3")
    assert parsed.files == (
        "requirements.txt",
        "requirements/base.txt",
        "constraints/pins.txt",
        "constraints/shared.txt",
        "requirements/nested/more.txt",
        "requirements/extra.txt",
    )


def test_a_missing_include_names_the_including_line_and_the_absolute_path() -> None:
    err = error(
        req, {"requirements.txt": "numpy\n", "sub/r.txt": "x\n-r ../nope.txt\n"}, "sub/r.txt"
    )
    assert err.file == f"{ROOT}/sub/r.txt" and err.line == 2
    assert f"`nope.txt` does not exist ({ROOT}/nope.txt)" in str(err)


def test_a_missing_top_file_is_an_error() -> None:
    assert "file not found" in str(error(req, {}))


def test_include_cycles_are_detected() -> None:
    files = {"a.txt": "-r b/b.txt\n", "b/b.txt": "x\n\n-c ../a.txt\n"}
    err = error(req, files, "a.txt")
    assert err.file == f"{ROOT}/b/b.txt" and err.line == 3
    assert "include cycle: a.txt -> b/b.txt -> a.txt" in str(err)


def test_the_same_file_twice_is_not_a_cycle() -> None:
    files = {"r.txt": "-r c.txt\n-r c.txt\n", "c.txt": "x\n"}
    assert req(files, "r.txt").requirements == ("x", "x")


def test_editable_dot_is_the_project_itself() -> None:
    parsed = req({"requirements.txt": "-e .\nnumpy\n"})
    assert parsed.project == "editable"
    assert parsed.requirements == ("numpy",)
    assert any("the project itself (editable)" in n for n in parsed.notes)
    nested = req({"reqs/dev.txt": "--editable ..\n"}, "reqs/dev.txt")
    assert nested.project == "editable"


def test_a_plain_dot_is_the_project_installed() -> None:
    assert req({"requirements.txt": ".\n"}).project == "install"


def test_editable_other_directory_is_refused() -> None:
    err = error(req, {"requirements.txt": "-e ./libs/core\n"})
    assert err.line == 1 and "libs/core" in str(err)


def test_editable_vcs_url_with_egg_is_kept_as_a_direct_reference() -> None:
    parsed = req({"requirements.txt": "-e git+https://github.com/org/lib.git@v1#egg=lib\n"})
    assert parsed.requirements == ("lib @ git+https://github.com/org/lib.git@v1",)
    assert parsed.warnings


def test_bare_urls_need_a_name() -> None:
    wheel = "https://x.org/pkg_name-1.0-py3-none-any.whl"
    assert req({"requirements.txt": wheel + "\n"}).requirements == (f"pkg_name @ {wheel}",)
    err = error(req, {"requirements.txt": "https://x.org/archive.tar.gz\n"})
    assert "without a package name" in str(err) and err.line == 1


def test_env_vars_are_left_as_is_with_a_warning() -> None:
    parsed = req({"requirements.txt": "pkg @ https://${TOKEN}@example.com/pkg.whl\n"})
    assert "${TOKEN}" in parsed.requirements[0]
    assert any("${TOKEN}" in w and "requirements.txt:1" in w for w in parsed.warnings)


def test_unknown_and_misplaced_options() -> None:
    err = error(req, {"requirements.txt": "numpy\n--frobnicate\n"})
    assert err.line == 2 and "unknown option `--frobnicate`" in str(err)
    err = error(req, {"requirements.txt": "numpy --index-url https://x.org/simple\n"})
    assert err.line == 1 and "must be on a line of its own" in str(err)


def test_other_global_options_are_ignored_with_a_warning() -> None:
    parsed = req({"requirements.txt": "--pre\n--only-binary :all:\nx\n"})
    assert parsed.requirements == ("x",)
    assert len(parsed.warnings) == 2


def test_constraints_file() -> None:
    parsed = rf.parse_constraints("c.txt", reader({"c.txt": "a<2\nb==1\n"}), root=ROOT)
    assert parsed.constraints == ("a<2", "b==1")
    assert parsed.requirements == ()


# ---------------------------------------------------------------- pyproject.toml

PYPROJECT = """
[build-system]
requires = ["setuptools"]

[project]
name = "churn"
requires-python = ">=3.10"
dependencies = ["numpy>=1.26", "pandas"]

[project.optional-dependencies]
plot = ["matplotlib"]

[dependency-groups]
test = ["pytest"]
Lint = ["ruff"]
dev = [{include-group = "test"}, {include-group = "lint"}, "ipython"]
"""


def test_pyproject_project_table() -> None:
    parsed = rf.parse_pyproject(PYPROJECT, root=ROOT)
    assert parsed.requirements == ("numpy>=1.26", "pandas")
    assert parsed.python == ">=3.10"
    assert parsed.project_name == "churn"
    assert parsed.project == "install"


def test_pyproject_extras_and_groups_with_includes() -> None:
    parsed = rf.parse_pyproject(PYPROJECT, extras=("plot",), groups=("dev",))
    assert parsed.requirements == (
        "numpy>=1.26",
        "pandas",
        "matplotlib",
        "pytest",
        "ruff",
        "ipython",
    )


def test_pyproject_unknown_extra_or_group() -> None:
    err = error(rf.parse_pyproject, PYPROJECT, root=ROOT, extras=("gpu",))
    assert "no extra `gpu`" in str(err) and err.hint and "plot" in err.hint
    assert err.file == f"{ROOT}/pyproject.toml"
    err = error(rf.parse_pyproject, PYPROJECT, groups=("docs",))
    assert "no dependency group `docs`" in str(err)


def test_pyproject_group_include_cycle() -> None:
    text = '[dependency-groups]\na = [{include-group = "b"}]\nb = [{include-group = "a"}]\n'
    err = error(rf.parse_pyproject, text, groups=("a",))
    assert "include cycle: a -> b -> a" in str(err)


def test_pyproject_bad_dependency_names_its_line() -> None:
    text = '[project]\nname = "x"\ndependencies = [\n  "ok",\n  "not ok!!",\n]\n'
    err = error(rf.parse_pyproject, text, root=ROOT)
    assert err.line == 5 and "`not ok!!`" in str(err)


def test_pyproject_toml_syntax_error_has_a_line() -> None:
    err = error(rf.parse_pyproject, '[project]\nname = "x"\ndependencies = [\n', root=ROOT)
    assert err.file == f"{ROOT}/pyproject.toml" and err.line is not None
    assert "TOML syntax error" in str(err)


def test_app_without_build_system_is_not_installable() -> None:
    parsed = rf.parse_pyproject('[project]\nname = "app"\ndependencies = ["x"]\n')
    assert parsed.project is None and parsed.requirements == ("x",)


def test_poetry_best_effort() -> None:
    text = """
[tool.poetry]
name = "svc"
[tool.poetry.dependencies]
python = "^3.10"
numpy = "^1.26.4"
zero = "^0.2.3"
tilde = "~1.2"
exact = "2.0.1"
any = "*"
rich = {version = ">=13", extras = ["jupyter"], markers = "sys_platform == 'linux'"}
opt = {version = "1", optional = true}
local = {path = "../local"}
"""
    parsed = rf.parse_pyproject(text)
    assert parsed.python == ">=3.10,<4"
    assert parsed.requirements == (
        "numpy<2,>=1.26.4",
        "zero<0.3,>=0.2.3",
        "tilde<1.3,>=1.2",
        "exact==2.0.1",
        "any",
        'rich[jupyter]>=13; sys_platform == "linux"',
    )
    assert parsed.project_name == "svc"
    assert any("best-effort" in n for n in parsed.notes)
    assert any("local" in w for w in parsed.warnings)


@pytest.mark.parametrize(
    ("poetry", "pep440"),
    [("^1.2.3", ">=1.2.3,<2"), ("^0.0.3", ">=0.0.3,<0.0.4"), ("~1", ">=1,<2"), ("*", "")],
)
def test_poetry_constraints(poetry: str, pep440: str) -> None:
    assert rf.poetry_constraint(poetry) == pep440


def test_poetry_alternatives_are_refused_with_a_line() -> None:
    text = '[tool.poetry.dependencies]\n\nx = "^1 || ^2"\n'
    err = error(rf.parse_pyproject, text)
    assert err.line == 3 and "cannot translate" in str(err)


# ---------------------------------------------------------------- locks

UV_LOCK = f"""
version = 1
requires-python = ">=3.11"

[[package]]
name = "me"
version = "0.1.0"
source = {{ editable = "." }}

[[package]]
name = "Numpy"
version = "2.1.3"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://f/numpy-2.1.3.tar.gz", hash = "sha256:{A}" }}
wheels = [{{ url = "https://f/numpy.whl", hash = "sha256:{B}" }}]

[[package]]
name = "torch"
version = "2.5.1+cpu"
source = {{ registry = "https://download.pytorch.org/whl/cpu" }}
wheels = [{{ url = "https://d/torch.whl", hash = "sha256:{C}" }}]

[[package]]
name = "lib"
version = "1.0"
source = {{ git = "https://github.com/o/lib?rev=v1#0123abc" }}
"""


def test_uv_lock() -> None:
    parsed = rf.parse_uv_lock(UV_LOCK)
    assert parsed.project == "editable" and parsed.project_name == "me"
    assert parsed.python == ">=3.11"
    assert parsed.pins == (
        Pin(name="numpy", version="2.1.3", sha256=(A, B)),
        Pin(name="torch", version="2.5.1+cpu", sha256=(C,)),
        Pin(name="lib", version="1.0", url="git+https://github.com/o/lib?rev=v1#0123abc"),
    )
    assert parsed.indexes == ("https://download.pytorch.org/whl/cpu",)
    assert parsed.requirements[:2] == ("numpy==2.1.3", "torch==2.5.1+cpu")


def test_uv_lock_without_packages() -> None:
    err = error(rf.parse_uv_lock, "version = 1\n", root=ROOT)
    assert err.file == f"{ROOT}/uv.lock" and "uv lock" in (err.hint or "")


PIPFILE_LOCK = {
    "_meta": {
        "requires": {"python_version": "3.11"},
        "sources": [{"url": "https://pypi.org/simple"}],
    },
    "default": {
        "Flask": {
            "hashes": [f"sha256:{A}", f"sha256:{B}"],
            "version": "==3.0.3",
            "markers": "python_version >= '3.8'",
        },
        "lib": {"git": "https://github.com/o/lib.git", "ref": "abc123"},
        "me": {"editable": True, "path": "."},
    },
    "develop": {"pytest": {"hashes": [f"sha256:{C}"], "version": "==8.3.3"}},
}


def test_pipfile_lock_default_and_develop() -> None:
    parsed = rf.parse_pipfile_lock(json.dumps(PIPFILE_LOCK))
    assert parsed.python == "3.11"
    assert parsed.pins[0] == Pin(
        name="flask", version="3.0.3", sha256=(A, B), marker="python_version >= '3.8'"
    )
    assert parsed.requirements == (
        "flask==3.0.3; python_version >= '3.8'",
        "lib @ git+https://github.com/o/lib.git@abc123",
    )
    assert parsed.project == "editable"
    dev = rf.parse_pipfile_lock(json.dumps(PIPFILE_LOCK), dev=True)
    assert dev.requirements[-1] == "pytest==8.3.3"


def test_pipfile_lock_needs_exact_versions() -> None:
    data = {"default": {"x": {"version": ">=1"}}}
    text = json.dumps(data, indent=2)
    err = error(rf.parse_pipfile_lock, text, root=ROOT)
    assert err.line == 3 and "no exact version" in str(err)


def test_pipfile_lock_json_error_has_a_line() -> None:
    err = error(rf.parse_pipfile_lock, '{\n  "default": {,\n}', root=ROOT)
    assert err.line == 2 and err.file == f"{ROOT}/Pipfile.lock"


PYLOCK = f"""
lock-version = "1.0"
requires-python = ">=3.9"

[[packages]]
name = "attrs"
version = "24.2.0"
index = "https://example.com/simple"
wheels = [{{ url = "https://f/attrs.whl", hashes = {{ sha256 = "{A}" }} }}]
sdist = {{ url = "https://f/attrs.tar.gz", hashes = {{ sha256 = "{B}" }} }}

[[packages]]
name = "cattrs"
version = "24.1.2"
marker = "python_version >= '3.9'"
archive = {{ url = "https://f/cattrs.zip", hashes = {{ sha256 = "{C}" }} }}

[[packages]]
name = "tool"
vcs = {{ type = "git", url = "https://github.com/o/tool", commit-id = "deadbeef" }}

[[packages]]
name = "me"
directory = {{ path = ".", editable = true }}
"""


def test_pylock() -> None:
    parsed = rf.parse_pylock(PYLOCK)
    assert parsed.python == ">=3.9"
    assert parsed.pins[0] == Pin(name="attrs", version="24.2.0", sha256=(A, B))
    assert parsed.pins[1].sha256 == (C,) and parsed.pins[1].url == "https://f/cattrs.zip"
    assert parsed.pins[2].url == "git+https://github.com/o/tool@deadbeef"
    assert parsed.requirements[0] == "attrs==24.2.0"
    assert parsed.requirements[1] == "cattrs @ https://f/cattrs.zip; python_version >= '3.9'"
    assert parsed.indexes == ("https://example.com/simple",)
    assert parsed.project == "editable"


def test_pylock_version_is_checked() -> None:
    err = error(rf.parse_pylock, 'lock-version = "2.0"\n', root=ROOT)
    assert err.line == 1 and "lock-version" in str(err)


def test_pipfile() -> None:
    text = """
[[source]]
url = "https://pypi.org/simple"
[[source]]
url = "https://example.com/simple/"
[packages]
requests = "*"
numpy = "==2.1.3"
exact = "1.0"
pandas = ">=2"
uvicorn = {version = "*", extras = ["standard"]}
lib = {git = "https://github.com/o/lib.git", ref = "v1"}
me = {path = ".", editable = true}
[dev-packages]
pytest = "*"
[requires]
python_version = "3.13"
"""
    parsed = rf.parse_pipfile(text)
    assert parsed.requirements == (
        "requests",
        "numpy==2.1.3",
        "exact==1.0",
        "pandas>=2",
        "uvicorn[standard]",
        "lib @ git+https://github.com/o/lib.git@v1",
    )
    assert parsed.indexes == ("https://example.com/simple",)
    assert parsed.python == "3.13"
    assert parsed.project == "editable"
    assert rf.parse_pipfile(text, dev=True).requirements[-1] == "pytest"


def test_pipfile_bad_value_has_a_line() -> None:
    err = error(rf.parse_pipfile, "[packages]\nok = '*'\nbad = 3\n", root=ROOT)
    assert err.line == 3


# ---------------------------------------------------------------- conda


def test_environment_yml() -> None:
    text = """name: x
channels: [conda-forge]
dependencies:
  - python=3.11
  - numpy=1.26
  - scipy>=1.11
  - pytorch
  - conda-forge::pandas==2.2.2
  - pip
  - pip:
    - requests==2.32.3
    - --extra-index-url https://download.pytorch.org/whl/cpu
"""
    parsed = rf.parse_environment_yml(text)
    assert parsed.python == "3.11"
    assert parsed.requirements == (
        "numpy==1.26.*",
        "scipy>=1.11",
        "torch",
        "pandas==2.2.2",
        "requests==2.32.3",
    )
    assert parsed.indexes == ("https://download.pytorch.org/whl/cpu",)
    assert any("taken from PyPI" in n and "torch (conda `pytorch`)" in n for n in parsed.notes)


def test_conda_only_packages_are_named_with_debian_equivalents() -> None:
    text = "dependencies:\n  - python=3.11\n  - numpy\n  - gcc\n  - libgomp\n  - mkl\n"
    err = error(rf.parse_environment_yml, text, root=ROOT)
    assert err.file == f"{ROOT}/environment.yml" and err.line == 4
    assert "gcc (Debian: gcc), libgomp (Debian: libgomp1), mkl (no Debian equivalent)" in str(err)
    assert err.hint and "system: [gcc, libgomp1]" in err.hint


@pytest.mark.parametrize(
    ("conda", "pep440"), [("=1.26", "==1.26.*"), ("1.2", "==1.2"), (">=1,<2", ">=1,<2"), ("", "")]
)
def test_conda_versions(conda: str, pep440: str) -> None:
    assert rf.conda_version(conda) == pep440


def test_environment_yml_syntax_error() -> None:
    err = error(rf.parse_environment_yml, "dependencies:\n  - a\n - b\n", root=ROOT)
    assert err.line is not None and "YAML syntax error" in str(err)


# ---------------------------------------------------------------- small files


def test_apt_txt() -> None:
    parsed = rf.parse_apt_txt("# tools\ngit\n\nlibgomp1  # openmp\ngit\n")
    assert parsed.system == ("git", "libgomp1")
    err = error(rf.parse_apt_txt, "git\nLib_Bad\n", root=ROOT)
    assert err.line == 2 and err.file == f"{ROOT}/apt.txt"


@pytest.mark.parametrize(
    ("text", "python"),
    [("python-3.10\n", "3.10"), ("python-3", "3"), ("python-3.10.4\n", "3.10.4")],
)
def test_runtime_txt(text: str, python: str) -> None:
    assert rf.parse_runtime_txt(text).python == python


def test_runtime_txt_refuses_r() -> None:
    err = error(rf.parse_runtime_txt, "\nr-2023-01-01\n", root=ROOT)
    assert err.line == 2 and "not a Python runtime" in str(err)


@pytest.mark.parametrize(("text", "python"), [("3.11\n", "3.11"), ("# c\n3.11.7\n", "3.11.7")])
def test_python_version(text: str, python: str) -> None:
    assert rf.parse_python_version(text).python == python


def test_python_version_refuses_pypy() -> None:
    err = error(rf.parse_python_version, "pypy3.10\n", root=ROOT)
    assert err.line == 1 and "CPython" in str(err)


@pytest.mark.parametrize(
    ("text", "run"),
    [
        ("pip install x\n", "bash binder/postBuild"),
        ("#!/bin/sh\nset -e\n", "sh binder/postBuild"),
        ("#!/usr/bin/env python3\nprint()\n", "python3 binder/postBuild"),
    ],
)
def test_postbuild_is_a_setup_step_naming_the_file(text: str, run: str) -> None:
    parsed = rf.parse_postbuild(text, "binder/postBuild")
    assert parsed.setup == (SetupStep(run=run, files=("binder/postBuild",)),)


# ---------------------------------------------------------------- devcontainer.json


def test_strip_jsonc_keeps_strings_and_lines() -> None:
    text = '{\n  // c\n  "a": "x // y /* z */", /* b\n  */ "b": [1, 2,],\n  "c": "q\\"//",\n}\n'
    plain = rf.strip_jsonc(text)
    assert json.loads(plain) == {"a": "x // y /* z */", "b": [1, 2], "c": 'q"//'}
    assert plain.count("\n") == text.count("\n")


def test_devcontainer() -> None:
    text = """{
  // comment
  "image": "mcr.microsoft.com/devcontainers/python:1-3.12-bookworm",
  "containerEnv": {"A": "1", "URL": "http://x//y"},
  "forwardPorts": [8888, "db:5432"],
  "postCreateCommand": {
    "deps": "pip install -r requirements.txt",
    "nlp": ["python", "-c", "print(1)"]
  },
}"""
    parsed = rf.parse_devcontainer(text)
    assert parsed.image == "mcr.microsoft.com/devcontainers/python:1-3.12-bookworm"
    assert parsed.python == "3.12"
    assert parsed.env == (("A", "1"), ("URL", "http://x//y"))
    assert parsed.ports == (8888,)
    assert parsed.setup == (
        SetupStep(run="pip install -r requirements.txt"),
        SetupStep(run="python -c 'print(1)'"),
    )
    assert any("db:5432" in w for w in parsed.warnings)


def test_devcontainer_syntax_error_has_the_line() -> None:
    err = error(rf.parse_devcontainer, '{\n  /* x */\n  "image" "x"\n}', root=ROOT)
    assert err.line == 3 and err.file == f"{ROOT}/.devcontainer/devcontainer.json"


# ---------------------------------------------------------------- cog.yaml


def test_cog() -> None:
    text = """build:
  gpu: true
  cuda: "12.1"
  python_version: "3.11"
  system_packages: [ffmpeg]
  python_packages: ["torch==2.3.1"]
  python_requirements: reqs/cog.txt
  run:
    - echo hi
    - command: pip install x
predict: "predict.py:Predictor"
"""
    files = {"reqs/cog.txt": "--extra-index-url https://example.com/simple\npillow\n"}
    parsed = rf.parse_cog(text, reader(files), root=ROOT)
    assert parsed.python == "3.11" and parsed.gpu and parsed.cuda == "12.1"
    assert parsed.system == ("ffmpeg",)
    assert parsed.requirements == ("torch==2.3.1", "cog")  # cog puts its SDK in every image
    assert parsed.requirement_files == ("reqs/cog.txt",)
    assert parsed.indexes == ("https://example.com/simple",)
    assert parsed.setup == (SetupStep(run="echo hi"), SetupStep(run="pip install x"))
    assert parsed.files == ("cog.yaml", "reqs/cog.txt")


def test_cog_unquoted_python_version() -> None:
    err = error(rf.parse_cog, "build:\n  python_version: 3.10\n", reader({}), root=ROOT)
    assert err.line == 2 and "python_version 3.10 is a number" in str(err)
    assert err.hint and 'quote it: python_version: "3.10"' in err.hint


def test_cog_missing_requirements_file() -> None:
    err = error(rf.parse_cog, "build:\n  python_requirements: r.txt\n", reader({}), root=ROOT)
    assert "file not found" in str(err) and f"{ROOT}/r.txt" in str(err)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (rf.parse_pipfile_lock, '{"default": {"x": ["==1"]}}'),
        (rf.parse_pipfile_lock, '{"default": {"x": {"hashes": 3, "version": "==1"}}}'),
        (rf.parse_pylock, 'lock-version = "1.0"\n'),
        (rf.parse_pylock, 'lock-version = "1.0"\npackages = ["x"]\n'),
        (rf.parse_devcontainer, '{"containerEnv": ["A=1"]}'),
        (rf.parse_uv_lock, 'version = 1\npackage = [{name = "x", source = "pypi"}]\n'),
    ],
)
def test_wrong_shapes_are_spec_errors_naming_the_file(parse: object, text: str) -> None:
    err = error(parse, text, root=ROOT)
    assert err.file.startswith(ROOT + "/")
    assert "unexpected content" in str(err)


def test_environment_yml_pip_requirement_file_is_read_relative_to_it() -> None:
    text = "dependencies:\n  - pip:\n    - -r file:reqs.txt\n    - black\n"
    files = {"env/reqs.txt": "-e ..\nhttpx\n"}
    parsed = rf.parse_environment_yml(text, "env/environment.yml", root=ROOT, read=reader(files))
    assert parsed.requirements == ("black",)
    assert parsed.requirement_files == ("env/reqs.txt",)
    assert parsed.project == "editable"
    assert parsed.files == ("env/environment.yml", "env/reqs.txt")
    err = error(rf.parse_environment_yml, text, "environment.yml", root=ROOT, read=reader({}))
    assert err.file == f"{ROOT}/environment.yml" and err.line == 3
    assert "does not exist" in str(err)


def test_local_paths_are_resolved_against_the_files_folder() -> None:
    pipfile = '[packages]\nme = {path = "..", editable = true}\nother = {path = "../lib"}\n'
    parsed = rf.parse_pipfile(pipfile, ".binder/Pipfile")
    assert parsed.project == "editable" and parsed.requirements == ()
    assert parsed.members == ("lib",)  # `../lib` from .binder/ is the project's lib/
    # at the root, `..` is outside the project: refused, saying why (was: silently left out)
    with pytest.raises(SpecError, match=r"`me`: path `\.\.` is outside the project"):
        rf.parse_pipfile(pipfile, "Pipfile")
    lock = 'lock-version = "1.0"\n[[packages]]\nname = "me"\ndirectory = {path = ".."}\n'
    assert rf.parse_pylock(lock, "locks/pylock.toml").project == "install"


def test_a_byte_order_mark_is_ignored() -> None:
    assert req({"requirements.txt": "\ufeffnumpy\n"}).requirements == ("numpy",)
    assert rf.parse_pyproject('\ufeff[project]\nname = "x"\n').project_name == "x"
    assert rf.parse_devcontainer('\ufeff{"image": "x"}').image == "x"


WORKSPACE_LOCK = """\
version = 1
requires-python = ">=3.11"

[[package]]
name = "root"
version = "0"
source = { virtual = "." }

[package.dev-dependencies]
dev = [{ name = "six" }]

[[package]]
name = "lib"
version = "0.1.0"
source = { editable = "packages/lib" }
dependencies = [{ name = "idna" }]

[package.dev-dependencies]
dev = [{ name = "anyio" }]

[[package]]
name = "app"
version = "0.1.0"
source = { virtual = "packages/app" }
dependencies = [{ name = "lib" }, { name = "sniffio" }]

[[package]]
name = "vendored"
version = "1.0"
source = { directory = "vendor/thing" }
"""
_PINS = "".join(
    f'\n[[package]]\nname = "{n}"\nversion = "{v}"\n'
    'source = { registry = "https://pypi.org/simple" }\n'
    for n, v in (("six", "1.17.0"), ("idna", "3.10"), ("anyio", "4.0.0"), ("sniffio", "1.3.1"))
)


def test_uv_lock_workspace_members_are_installed_from_the_project() -> None:
    parsed = rf.parse_uv_lock(WORKSPACE_LOCK + _PINS)
    assert parsed.project is None  # a virtual root: uv sync installs no root package
    # the editable member and the non-editable local folder, both from the project's files
    assert parsed.members == ("packages/lib", "vendor/thing")
    # the root's dev group, and each member's own dependencies (not a member's dev group)
    assert set(parsed.direct) == {"six==1.17.0", "idna==3.10", "sniffio==1.3.1"}
    # a virtual member is no package: nothing said; the local folder is installed editable,
    # saying so
    assert parsed.warnings == ()
    (note,) = [n for n in parsed.notes if "`vendored`" in n]
    assert "local folder `vendor/thing`" in note and "installed editable" in note


def test_uv_lock_local_file_is_left_out_and_a_folder_outside_refused() -> None:
    wheel = WORKSPACE_LOCK.replace(
        '{ directory = "vendor/thing" }', '{ path = "dist/thing-1.0-py3-none-any.whl" }'
    )
    parsed = rf.parse_uv_lock(wheel + _PINS)
    assert parsed.members == ("packages/lib",)
    assert len(parsed.warnings) == 1 and "`vendored`" in parsed.warnings[0]
    assert "left out" in parsed.warnings[0]
    outside = WORKSPACE_LOCK.replace('"vendor/thing"', '"../thing"') + _PINS
    err = error(rf.parse_uv_lock, outside, root=ROOT)
    assert "`vendored`: local source `../thing` is outside the project" in err.message


def test_uv_lock_member_outside_the_project_is_refused() -> None:
    text = WORKSPACE_LOCK.replace('"packages/lib"', '"../lib"') + _PINS
    err = error(rf.parse_uv_lock, text, root=ROOT)
    assert "`lib`: local source `../lib` is outside the project" in err.message


def test_pipfile_lock_editable_path_inside_is_installed_and_outside_refused() -> None:
    def lock(entries: str) -> str:
        return '{"_meta": {}, "default": {' + entries + "}}"

    six = '"six": {"version": "==1.17.0", "hashes": ["sha256:%s"]}' % ("4" * 64)
    inside = lock(six + ', "dummy": {"editable": true, "path": "./sub"}')
    parsed = rf.parse_pipfile_lock(inside)
    assert parsed.members == ("sub",)  # installed editable from the project's files
    assert parsed.warnings == () and parsed.requirements == ("six==1.17.0",)
    # a folder not editable: installed editable from the project's files, saying so
    copied = rf.parse_pipfile_lock(lock(six + ', "dummy": {"path": "sub"}'))
    assert copied.members == ("sub",) and copied.warnings == ()
    assert (
        "`dummy` (local folder `sub`, not editable there) is installed editable"
        in (copied.notes[0])
    )
    # a built file: left out, saying so
    wheel = rf.parse_pipfile_lock(lock(six + ', "dummy": {"path": "dist/d-1.0-py3-none-any.whl"}'))
    assert wheel.members == () and "`dummy` is a local path; left out" in wheel.warnings[0]
    # outside the project: refused with the reason (was: left out silently)
    err = error(
        rf.parse_pipfile_lock, lock('"dummy": {"editable": true, "path": "../x"}'), root=ROOT
    )
    assert "`dummy`: path `../x` is outside the project" in err.message


def test_logical_lines_join_continuations_as_pip_does() -> None:
    """One rule for backslash-continued lines: the reader's and the spec's error messages."""
    from envd.model.reqfiles import logical_lines

    text = "\ufeffnumpy==1.26 \\\n  --hash=sha256:aa\n# a comment \\\nscipy\n\\\n"
    assert list(logical_lines(text)) == [
        (1, "numpy==1.26   --hash=sha256:aa"),
        (3, " # a comment \\"),
        (4, "scipy"),
        (5, ""),
    ]
