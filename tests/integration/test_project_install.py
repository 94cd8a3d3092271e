"""`project: editable` / `install`: the project itself installed from its pyproject.toml, with
a dist-info every file of which its RECORD owns (so the image verifies)."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from envd.model.content import manifest_from_tars
from envd.model.inventory import integrity_problems
from envd.model.lockfile import loads
from tests.conftest import Envctl

pytestmark = pytest.mark.integration

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-pkg"
version = "0.3.1"
description = "a tiny package"
dependencies = ["six"]

[project.scripts]
tiny = "tiny_pkg.cli:main"
"""

SPEC = """\
version: 1
base: {debian: bookworm}
python: "3.11"
requirements: pyproject.toml
project: %s
"""

CLI = "def main():\n    print('tiny says', __import__('tiny_pkg').VALUE)\n"


def make(root: Path, mode: str) -> Path:
    path = root / f"tiny-{mode}"
    (path / "src" / "tiny_pkg").mkdir(parents=True)
    (path / "envd.yaml").write_text(SPEC % mode)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "src" / "tiny_pkg" / "__init__.py").write_text("VALUE = 'one'\n")
    (path / "src" / "tiny_pkg" / "cli.py").write_text(CLI)
    return path


def enter(envctl: Envctl, path: Path, code: str) -> str:
    return envctl.ok("enter", str(path), "--", "python", "-c", code).strip()


def build(envctl: Envctl, path: Path) -> dict:  # type: ignore[type-arg]
    out = envctl.ok("build", "--json", str(path))
    return json.loads(out[out.index('{\n  "result"') :])["result"]


def problems(image: str, tmp: Path) -> list[str]:
    """What the image's own bytes contradict (a .pth no RECORD owns, a file not as its RECORD
    says), read as `envctl pull` reads a shared image."""
    archive = tmp / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), image], check=True)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = [outer.extractfile(name) for name in manifest[0]["Layers"]]
        merged = manifest_from_tars(layer for layer in layers if layer is not None)
    archive.unlink()
    return [f"{p.path} {p.what}" for p in integrity_problems(merged)]


def project_files(image: str) -> list[str]:
    script = "cd /opt/venv/lib/python3.11/site-packages && ls -d tiny_pkg* __editable__* || true"
    return subprocess.run(
        ["docker", "run", "--rm", "--workdir", "/", image, "sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_editable_project_is_live_and_has_metadata(shared: Envctl, tmp_path: Path) -> None:
    path = make(shared.cwd, "editable")
    shared.ok("lock", str(path))
    first = build(shared, path)
    assert "project" in [s["name"] for s in first["steps"]]
    code = (
        "import importlib.metadata as m, tiny_pkg, six; "
        "print(tiny_pkg.VALUE, m.version('tiny-pkg'), "
        "m.distribution('tiny-pkg').read_text('direct_url.json').strip())"
    )
    out = enter(shared, path, code)
    assert out.startswith("one 0.3.1 ")
    assert json.loads(out.split(" ", 2)[2]) == {
        "dir_info": {"editable": True},
        "url": "file:///workspace",
    }
    assert shared.ok("enter", str(path), "--", "tiny").strip() == "tiny says one"

    # editing the code needs no build: the project at /workspace is what is imported
    (path / "src" / "tiny_pkg" / "__init__.py").write_text("VALUE = 'two'\n")
    assert enter(shared, path, "import tiny_pkg; print(tiny_pkg.VALUE)") == "two"
    assert build(shared, path)["cached"] is True
    assert project_files(first["image"]) == [
        "__editable__.tiny_pkg-0.3.1.pth",
        "tiny_pkg-0.3.1.dist-info",
    ]
    assert problems(first["image"], tmp_path) == []

    # the version is the project step's content: it is built again, from that step on
    (path / "pyproject.toml").write_text(PYPROJECT.replace("0.3.1", "0.4.0"))
    again = build(shared, path)
    assert [s["name"] for s in again["steps"] if not s["cached"]] == ["project", "metadata"]
    assert enter(shared, path, "import importlib.metadata as m; print(m.version('tiny-pkg'))") == (
        "0.4.0"
    )


def test_installed_project_is_a_copy(shared: Envctl, tmp_path: Path) -> None:
    path = make(shared.cwd, "install")
    shared.ok("lock", str(path))
    first = build(shared, path)
    code = "import tiny_pkg; print(tiny_pkg.VALUE, tiny_pkg.__file__)"
    value, where = enter(shared, path, code).split()
    assert value == "one" and where.startswith("/opt/venv/lib/python3.11/site-packages/tiny_pkg/")
    (path / "src" / "tiny_pkg" / "__init__.py").write_text("VALUE = 'two'\n")
    rebuilt = build(shared, path)
    assert [s["name"] for s in rebuilt["steps"] if not s["cached"]] == ["project", "metadata"]
    assert enter(shared, path, "import tiny_pkg; print(tiny_pkg.VALUE)") == "two"
    assert project_files(first["image"]) == ["tiny_pkg", "tiny_pkg-0.3.1.dist-info"]
    assert problems(rebuilt["image"], tmp_path) == []


def pinned(path: Path) -> set[str]:
    lock = loads((path / "envd.lock").read_text(), str(path / "envd.lock"))
    return {p.name for p in lock.python}


def test_init_then_lock_pins_the_projects_own_dependencies(shared: Envctl) -> None:
    """A PEP 621 project with no `requirements:`: `lock` pins [project] dependencies (before,
    `build` failed with "depends on six, which envd.lock does not pin")."""
    path = shared.cwd / "pep621"
    (path / "src" / "tiny_pkg").mkdir(parents=True)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "src" / "tiny_pkg" / "__init__.py").write_text("VALUE = 'one'\n")
    (path / "src" / "tiny_pkg" / "cli.py").write_text(CLI)
    shared.ok("init", str(path))
    spec = (path / "envd.yaml").read_text()
    assert "project: editable" in spec and "requirements" not in spec
    shared.ok("lock", str(path))
    assert "six" in pinned(path)
    # a dependency added to pyproject.toml: the lock is stale, and `lock` pins it
    (path / "pyproject.toml").write_text(PYPROJECT.replace('["six"]', '["six", "idna"]'))
    shared.ok("lock", str(path))
    assert {"six", "idna"} <= pinned(path)
    build(shared, path)
    assert enter(shared, path, "import tiny_pkg, six, idna; print(tiny_pkg.VALUE)") == "one"


SETUP_PY = """\
from setuptools import find_packages, setup

setup(
    name="legacy-pkg",
    version="2.1",
    packages=find_packages(),
    install_requires=["six"],
    entry_points={"console_scripts": ["legacy = legacy_pkg.cli:main"]},
)
"""


def test_a_setup_py_only_project_is_locked_and_installed(shared: Envctl) -> None:
    path = shared.cwd / "legacy"
    (path / "legacy_pkg").mkdir(parents=True)
    (path / "setup.py").write_text(SETUP_PY)
    (path / "legacy_pkg" / "__init__.py").write_text("VALUE = 'old'\n")
    (path / "legacy_pkg" / "cli.py").write_text(CLI.replace("tiny_pkg", "legacy_pkg"))
    shared.ok("init", str(path))
    assert "project: editable" in (path / "envd.yaml").read_text()
    shared.ok("lock", str(path))
    assert "six" in pinned(path)
    build(shared, path)
    code = "import importlib.metadata as m, legacy_pkg, six; print(m.version('legacy-pkg'))"
    assert enter(shared, path, code) == "2.1"
    assert shared.ok("enter", str(path), "--", "legacy").strip() == "tiny says old"


_FILES = "https://files.pythonhosted.org/packages"
_IDNA = (
    f"{_FILES}/76/c6/c88e154df9c4e1a2a66ccf0005a88dfb2650c1dffb6f5ce603dfbd452ce3/"
    "idna-3.10-py3-none-any.whl",
    "946d195a0d259cbba61165e88e65941f16e9b36ea6ddb97f00452bae8b1287d3",
)
_SIX = (
    f"{_FILES}/b7/ce/149a00dd41f10bc29e5921b496af8b574d8413afcd5e30dfa0ed46c2cc5e/"
    "six-1.17.0-py2.py3-none-any.whl",
    "4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274",
)
WORKSPACE_LOCK = f"""\
version = 1
requires-python = ">=3.11"

[manifest]
members = ["app", "lib"]

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}
dependencies = [{{ name = "lib" }}, {{ name = "six" }}]

[[package]]
name = "idna"
version = "3.10"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "{_IDNA[0]}", hash = "sha256:{_IDNA[1]}" }}]

[[package]]
name = "lib"
version = "0.2.0"
source = {{ editable = "packages/lib" }}
dependencies = [{{ name = "idna" }}]

[[package]]
name = "six"
version = "1.17.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "{_SIX[0]}", hash = "sha256:{_SIX[1]}" }}]
"""


def test_requirements_uv_lock_installs_the_root_and_workspace_members_as_uv_sync(
    shared: Envctl, tmp_path: Path
) -> None:
    path = shared.cwd / "uv-workspace"
    (path / "src" / "app").mkdir(parents=True)
    (path / "packages" / "lib" / "src" / "mylib").mkdir(parents=True)
    # hand-written: no `project:`; uv.lock's root is editable, so it is installed
    (path / "envd.yaml").write_text(
        'version: 1\nbase: {debian: bookworm}\npython: "3.11"\nrequirements: uv.lock\n'
    )
    (path / "uv.lock").write_text(WORKSPACE_LOCK)
    (path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["lib", "six"]\n\n'
        "[tool.uv.sources]\nlib = { workspace = true }\n\n"
        '[tool.uv.workspace]\nmembers = ["packages/*"]\n'
    )
    (path / "src" / "app" / "__init__.py").write_text("NAME = 'app'\n")
    (path / "packages" / "lib" / "pyproject.toml").write_text(
        '[project]\nname = "lib"\nversion = "0.2.0"\ndependencies = ["idna"]\n'
    )
    (path / "packages" / "lib" / "src" / "mylib" / "__init__.py").write_text("VALUE = 1\n")
    shared.ok("lock", str(path))
    assert loads((path / "envd.lock").read_text(), "envd.lock").inputs.members == ("packages/lib",)
    result = build(shared, path)
    code = (
        "import importlib.metadata as m, app, mylib, six, idna; "
        "print(app.NAME, mylib.VALUE, m.version('app'), m.version('lib'), m.version('idna'))"
    )
    assert enter(shared, path, code) == "app 1 0.1.0 0.2.0 3.10"
    # the member is live at /workspace too: editing it needs no build
    (path / "packages" / "lib" / "src" / "mylib" / "__init__.py").write_text("VALUE = 2\n")
    assert enter(shared, path, "import mylib; print(mylib.VALUE)") == "2"
    assert problems(result["image"], tmp_path) == []


def test_a_pipfile_path_package_is_installed_with_its_dependencies_locked(
    shared: Envctl,
) -> None:
    """A Pipfile (no Pipfile.lock) naming `{path = "./sub"}`: `init` writes `requirements:
    Pipfile`, `lock` pins the package's own dependencies (read from sub/pyproject.toml), and
    the build installs it editable from the project's files."""
    path = shared.cwd / "pipfile-path"
    (path / "sub" / "src" / "subpkg").mkdir(parents=True)
    (path / "Pipfile").write_text(
        '[packages]\nsubpkg = {path = "./sub", editable = true}\n\n'
        '[requires]\npython_version = "3.11"\n'
    )
    (path / "sub" / "pyproject.toml").write_text(
        '[project]\nname = "subpkg"\nversion = "0.3.0"\ndependencies = ["six"]\n'
    )
    (path / "sub" / "src" / "subpkg" / "__init__.py").write_text("import six\nVALUE = 'sub'\n")
    shared.ok("init", str(path))
    assert "requirements: Pipfile" in (path / "envd.yaml").read_text()
    shared.ok("lock", str(path))
    lock = loads((path / "envd.lock").read_text(), "envd.lock")
    assert lock.inputs.members == ("sub",)
    (six,) = [p for p in lock.python if p.name == "six"]
    assert six.hashes  # pinned with its hashes
    build(shared, path)
    code = "import importlib.metadata as m, subpkg, six; print(subpkg.VALUE, m.version('subpkg'))"
    assert enter(shared, path, code) == "sub 0.3.0"
    # installed editable from the project's files: an edit needs no build
    (path / "sub" / "src" / "subpkg" / "__init__.py").write_text("import six\nVALUE = 'live'\n")
    assert enter(shared, path, "import subpkg; print(subpkg.VALUE)") == "live"
    # a dependency added to the package makes the lock stale: `lock` pins it
    (path / "sub" / "pyproject.toml").write_text(
        '[project]\nname = "subpkg"\nversion = "0.3.0"\ndependencies = ["six", "idna"]\n'
    )
    shared.ok("lock", str(path))
    assert {"six", "idna"} <= pinned(path)
