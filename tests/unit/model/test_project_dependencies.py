"""`project:` locks the project's own dependencies: pyproject.toml's [project], or a setuptools
project's setup.cfg / literal setup.py install_requires, read without running setup.py; and
the build installs a setup.py-only project from that metadata."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec
from envd.model.lockfile import PythonPackage, hash_inputs, inputs_from_spec, staleness
from envd.model.plan import project_files
from envd.model.setupmeta import SetupError, read_setup
from envd.services.planning import read_project_inputs
from tests.unit.model.test_plan import lock

SPEC = "base: {debian: bookworm}\npython: '3.11'\n"

PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "sampleproject"
version = "3.0.0"
dependencies = ["peppercorn"]

[project.optional-dependencies]
dev = ["check-manifest"]
"""

SETUP_PY = """\
from setuptools import setup, find_packages

setup(
    name='Dummy',
    version='1.0.0',
    description='Dummy package',
    packages=find_packages(),
    install_requires=['numpy', "six>=1.16; python_version >= '3.8'"],
    entry_points={'console_scripts': ['dummy = dummy.cli:main']},
)
"""


def project(tmp_path: Path, spec: str, **files: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "envd.yaml").write_text(SPEC + spec)
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_project_editable_locks_pyprojects_dependencies(tmp_path: Path) -> None:
    root = project(tmp_path, "project: editable\n", **{"pyproject.toml": PYPROJECT})
    spec = load_spec(root)
    assert spec.all_requirements == ("peppercorn",)  # extras are not chosen
    assert "pyproject.toml" in spec.requirements_files  # watched: a change makes the lock stale
    # a lock made before the dependency was added is stale (its inputs differ)
    before = load_spec(project(tmp_path / "b", "", **{"pyproject.toml": PYPROJECT}))
    assert hash_inputs(inputs_from_spec(before)) != hash_inputs(inputs_from_spec(spec))


def test_requirements_naming_pyproject_is_not_read_twice(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: pyproject.toml\nproject: editable\n",
        **{"pyproject.toml": PYPROJECT},
    )
    assert load_spec(root).all_requirements == ("peppercorn",)


def test_project_deps_come_along_with_a_requirements_file(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: requirements.txt\nproject: editable\n",
        **{"pyproject.toml": PYPROJECT, "requirements.txt": "idna==3.10\n"},
    )
    assert load_spec(root).all_requirements == ("idna==3.10", "peppercorn")


def test_without_project_key_nothing_is_added(tmp_path: Path) -> None:
    root = project(tmp_path, "", **{"pyproject.toml": PYPROJECT, "setup.py": SETUP_PY})
    assert load_spec(root).all_requirements == ()


def test_setup_py_install_requires_are_locked(tmp_path: Path) -> None:
    root = project(tmp_path, "project: editable\n", **{"setup.py": SETUP_PY})
    spec = load_spec(root)
    assert spec.all_requirements == ("numpy", 'six>=1.16; python_version >= "3.8"')
    assert spec.requirements_files == ("setup.py",)


def test_setup_cfg_install_requires_are_locked(tmp_path: Path) -> None:
    cfg = (
        "[metadata]\nname = mypkg\nversion = 0.2\n\n"
        "[options]\npackages = find:\ninstall_requires =\n    six\n    idna>=3  # why\n"
    )
    root = project(
        tmp_path,
        "project: editable\n",
        **{"setup.cfg": cfg, "setup.py": "import setuptools\nsetuptools.setup()\n"},
    )
    assert load_spec(root).all_requirements == ("six", "idna>=3")


def test_pyproject_without_project_table_falls_back_to_setup_py(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "project: editable\n",
        **{
            "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n',
            "setup.py": SETUP_PY,
        },
    )
    assert load_spec(root).all_requirements[0] == "numpy"


def test_computed_install_requires_is_computed_at_lock_from_hashed_files(tmp_path: Path) -> None:
    setup_py = (
        "import os\nfrom setuptools import setup\n"
        "here = os.path.dirname(__file__)\n"
        "reqs = open(os.path.join(here, 'requirements.txt')).read().splitlines()\n"
        "setup(name='x', version='1', install_requires=reqs)\n"
    )
    root = project(
        tmp_path, "project: editable\n", **{"setup.py": setup_py, "requirements.txt": "six\n"}
    )
    spec = load_spec(root)
    assert spec.all_requirements == ()  # computed at lock, in a container: not read here
    assert [entry.split(" ")[0] for entry in spec.computed] == ["setup.py", "requirements.txt"]
    before = inputs_from_spec(spec)
    (root / "requirements.txt").write_text("six\nattrs\n")
    after = inputs_from_spec(load_spec(root))
    assert hash_inputs(before) != hash_inputs(after)
    reasons = staleness(replace(lock(()), inputs=before, inputs_hash=hash_inputs(before)), after)
    assert reasons == [
        "requirements.txt changed, which setup.py's computed metadata comes from "
        "(it is computed again in a container at lock)"
    ]


def test_setup_cfg_file_directives_are_computed_from_the_files_they_name(tmp_path: Path) -> None:
    cfg = (
        "[metadata]\nname = a\nversion = file: VERSION\n\n"
        "[options]\ninstall_requires = file: requirements.txt, extra.txt\n"
    )
    root = project(
        tmp_path,
        "project: editable\n",
        **{"setup.cfg": cfg, "VERSION": "1.0\n", "requirements.txt": "six\n"},
    )
    spec = load_spec(root)
    # (extra.txt is named but missing: nothing to hash)
    assert [e.split(" ")[0] for e in spec.computed] == ["setup.cfg", "VERSION", "requirements.txt"]


def test_setup_kwargs_unpacked_are_refused() -> None:
    with pytest.raises(SetupError, match="cannot tell its install_requires"):
        read_setup("from setuptools import setup\nsetup(**META)\n", None)


def test_setup_cfg_attr_version_is_read_from_the_module_at_build(tmp_path: Path) -> None:
    # (was refused at lock; now read as setuptools reads it first: the module's literal)
    cfg = (
        "[metadata]\nname = a\nversion = attr: a.__version__\n\n[options]\ninstall_requires = six\n"
    )
    meta = read_setup(None, cfg)
    assert (meta.version, meta.version_attr, meta.install_requires) == (
        None,
        "a.__version__",
        ("six",),
    )
    root = project(tmp_path, "project: editable\n", **{"setup.cfg": cfg})
    assert load_spec(root).all_requirements == ("six",)  # locks without the version
    (root / "a").mkdir()
    (root / "a" / "__init__.py").write_text("__version__ = '4.5.6'\n")
    base = lock(())
    pinned = (PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),)
    the_lock = replace(base, inputs=replace(base.inputs, project="editable"), python=pinned)
    package = read_project_inputs(str(root), the_lock).package
    assert package is not None and (package.name, package.version) == ("a", "4.5.6")
    (root / "a" / "__init__.py").write_text("__version__ = compute()\n")
    with pytest.raises(SpecError, match=r"assigns it no literal string") as info:
        read_project_inputs(str(root), the_lock)
    assert '__version__ = "1.2.0"' in (info.value.hint or "")
    with pytest.raises(SetupError, match="names no module"):
        read_setup(None, "[metadata]\nname = a\nversion = attr: nomodule\n")


def test_setup_py_overrides_setup_cfg() -> None:
    meta = read_setup(
        "from setuptools import setup\nsetup(version='2.0', package_dir={'': 'lib'})\n",
        "[metadata]\nname = a\nversion = 1.0\n[options]\ninstall_requires = six\n",
    )
    assert (meta.name, meta.version, meta.install_requires) == ("a", "2.0", ("six",))
    assert meta.package_dir == "lib"


def test_a_setup_py_project_is_installed_from_its_metadata(tmp_path: Path) -> None:
    root = project(tmp_path, "project: editable\n", **{"setup.py": SETUP_PY})
    (root / "dummy").mkdir()
    (root / "dummy" / "__init__.py").write_text("")
    base = lock(())
    pinned = (
        PythonPackage("numpy", "2.1.0", ("sha256:" + "1" * 64,)),
        PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),
    )
    the_lock = replace(base, inputs=replace(base.inputs, project="editable"), python=pinned)
    package = read_project_inputs(str(root), the_lock).package
    assert package is not None
    assert (package.name, package.version, package.source) == ("Dummy", "1.0.0", "")
    files, made = project_files(package, "editable", "3.11")
    paths = [f.path for f in files]
    assert "opt/venv/bin/dummy" in paths
    metadata = next(
        made[f.sha256] for f in files if f.path.endswith("dummy-1.0.0.dist-info/METADATA")
    )
    assert b"Requires-Dist: numpy\n" in metadata
    # a lock without the project's dependencies is refused, naming them and `envctl lock`
    with pytest.raises(SpecError, match=r"depends on numpy, which envd\.lock does not pin") as info:
        read_project_inputs(str(root), replace(the_lock, python=pinned[1:]))
    assert "envctl lock" in (info.value.hint or "")


def test_a_setup_py_without_literal_version_fails_the_build_with_the_fix(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "project: install\n",
        **{"setup.py": "from setuptools import setup\nsetup(name='a', version=V)\n"},
    )
    base = lock(())
    the_lock = replace(base, inputs=replace(base.inputs, project="install"))
    with pytest.raises(SpecError, match=r"`version=` is computed when setup\.py runs"):
        read_project_inputs(str(root), the_lock)


def test_uv_sources_are_left_to_uv_lock(tmp_path: Path) -> None:
    pyproject = (
        '[project]\nname = "app"\nversion = "0.1"\ndependencies = ["lib", "six"]\n\n'
        "[tool.uv.sources]\nlib = { workspace = true }\n"
    )
    root = project(tmp_path, "project: editable\n", **{"pyproject.toml": pyproject})
    assert load_spec(root).all_requirements == ("six",)  # `lib` is not looked up on the index


def test_a_setup_py_linked_outside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(SETUP_PY)
    root = project(tmp_path, "project: editable\n")
    (root / "setup.py").symlink_to(tmp_path / "elsewhere.py")
    with pytest.raises(SpecError, match=r"no pyproject\.toml, setup\.py or setup\.cfg"):
        load_spec(root)  # never read: the link leaves the project


def test_extension_modules_are_refused_naming_why() -> None:
    setup_py = (
        "from setuptools import Extension, setup\n"
        "setup(name='fast', version='1', ext_modules=[Extension('fast._c', ['c.c'])])\n"
    )
    with pytest.raises(SetupError, match="builds extension modules") as info:
        read_setup(setup_py, None)
    assert "wheel" in info.value.hint


def test_a_url_dependency_is_taken_from_the_requirements_file_naming_it(tmp_path: Path) -> None:
    url = "https://files.example.org/tool-1.0-py3-none-any.whl"
    pyproject = (
        f'[project]\nname = "app"\nversion = "0.1"\ndependencies = ["six", "tool @ {url}"]\n'
    )
    files = {"pyproject.toml": pyproject, "requirements.txt": f"tool @ {url}\n"}
    root = project(tmp_path, "requirements: requirements.txt\nproject: editable\n", **files)
    assert load_spec(root).all_requirements == (f"tool @ {url}", "six")


def test_a_vcs_dependency_nothing_else_names_is_refused_at_project(tmp_path: Path) -> None:
    pyproject = (
        '[project]\nname = "app"\nversion = "0.1"\n'
        'dependencies = ["tool @ git+https://example.org/tool.git"]\n'
    )
    root = project(tmp_path, "project: editable\n", **{"pyproject.toml": pyproject})
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert "pyproject.toml: the project's requirement `tool @ git+" in info.value.message
    assert info.value.key_path == "project"


def _uv_lock(root_source: str) -> str:
    return (
        'version = 1\nrequires-python = ">=3.11"\n\n'
        f'[[package]]\nname = "app"\nversion = "0.1.0"\nsource = {root_source}\n'
        'dependencies = [{ name = "six" }]\n\n'
        '[[package]]\nname = "six"\nversion = "1.17.0"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
        'wheels = [{ url = "https://x/six-1.17.0-py2.py3-none-any.whl", hash = "sha256:'
        + "4" * 64
        + '" }]\n'
    )


APP_PYPROJECT = '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["six"]\n'


def test_requirements_uv_lock_installs_its_editable_root_as_uv_sync_does(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: uv.lock\n",
        **{"uv.lock": _uv_lock('{ editable = "." }'), "pyproject.toml": APP_PYPROJECT},
    )
    spec = load_spec(root)
    assert spec.project == "editable"  # no `project:` written: uv.lock's root says editable
    assert "pyproject.toml" in spec.requirements_files  # the root's metadata is watched
    assert "six==1.17.0" in spec.all_requirements
    # a lock made when uv.lock's root was not installed is stale, saying why
    virtual = load_spec(
        project(
            tmp_path / "v",
            "requirements: uv.lock\n",
            **{"uv.lock": _uv_lock('{ virtual = "." }'), "pyproject.toml": APP_PYPROJECT},
        )
    )
    assert virtual.project is None  # `[tool.uv] package = false`: uv sync installs no root
    assert hash_inputs(inputs_from_spec(virtual)) != hash_inputs(inputs_from_spec(spec))


def test_project_written_in_envd_yaml_wins_over_uv_locks_root(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: uv.lock\nproject: install\n",
        **{"uv.lock": _uv_lock('{ editable = "." }'), "pyproject.toml": APP_PYPROJECT},
    )
    assert load_spec(root).project == "install"


def test_uv_locks_root_with_a_bad_dependency_is_refused_at_requirements(tmp_path: Path) -> None:
    bad = '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["other @ git+https://x/other"]\n'
    root = project(
        tmp_path,
        "requirements: uv.lock\n",
        **{"uv.lock": _uv_lock('{ editable = "." }'), "pyproject.toml": bad},
    )
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert info.value.key_path == "requirements"  # the key that installs the project


def test_a_workspace_member_is_installed_editable_from_its_folder(tmp_path: Path) -> None:
    from envd.model.lockfile import dumps, loads, staleness
    from envd.model.plan import make_plan

    lib = '[project]\nname = "lib"\nversion = "0.2.0"\ndependencies = ["idna"]\n'
    app = '[project]\nname = "app"\nversion = "0.1.0"\ndependencies = ["lib", "six"]\n'
    root = project(
        tmp_path,
        "project: editable\n",
        **{"pyproject.toml": app, "packages__lib__pyproject.toml": lib},
    )
    (root / "packages/lib/src/mylib").mkdir(parents=True)
    (root / "packages/lib/src/mylib/__init__.py").write_text("")
    base = lock(())
    pinned = (
        PythonPackage("idna", "3.10", ("sha256:" + "1" * 64,)),
        PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),
    )
    inputs = replace(base.inputs, project="editable", members=("packages/lib",))
    the_lock = replace(base, inputs=inputs, inputs_hash=hash_inputs(inputs), python=pinned)
    read = read_project_inputs(str(root), the_lock)  # `lib` is local: not asked of the lock
    (member,) = read.members
    assert (member.name, member.version, member.source) == ("lib", "0.2.0", "packages/lib/src")
    plan = make_plan("p", the_lock, package=read.package, members=read.members)
    step = next(s for s in plan.steps if s.name == "project")
    generated = dict(plan.generated)
    by_path = {f.path: generated[f.sha256] for f in step.files}
    site = "opt/venv/lib/python3.11/site-packages"
    assert by_path[f"{site}/__editable__.lib-0.2.0.pth"] == b"/workspace/packages/lib/src\n"
    assert b"/workspace/packages/lib" in by_path[f"{site}/lib-0.2.0.dist-info/direct_url.json"]
    assert f"{site}/app-0.1.0.dist-info/METADATA" in by_path  # the root is still installed
    # a member's own dependency the lock lacks is named, with the member
    with pytest.raises(SpecError, match=r"`packages/lib`: the project depends on idna"):
        read_project_inputs(str(root), replace(the_lock, python=pinned[1:]))
    # the lock keeps the members, and a lock without them is stale, saying why
    assert loads(dumps(the_lock), "envd.lock").inputs.members == ("packages/lib",)
    old = replace(inputs, members=())
    assert "local packages changed: packages/lib → none" in staleness(the_lock, old)
    # a lock without members keeps the project step's key it always had
    plain = replace(base, inputs=replace(base.inputs, project="editable"), python=pinned)
    keys = {s.name: s.key for s in make_plan("p", plain, package=read.package).steps}
    assert keys["project"] != step.key


def test_a_member_with_only_setup_py_is_installed_from_its_literal_metadata(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, "", **{"packages__lib__setup.py": SETUP_PY})
    (root / "packages/lib/dummy").mkdir()
    (root / "packages/lib/dummy/__init__.py").write_text("")
    base = lock(())
    pinned = (
        PythonPackage("numpy", "2.1.0", ("sha256:" + "1" * 64,)),
        PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),
    )
    the_lock = replace(base, inputs=replace(base.inputs, members=("packages/lib",)), python=pinned)
    (member,) = read_project_inputs(str(root), the_lock).members
    assert (member.name, member.version, member.source) == ("Dummy", "1.0.0", "packages/lib")
    assert member.scripts == (("dummy", "dummy.cli:main"),)
    # its dependencies must be locked, as a pyproject member's are
    with pytest.raises(SpecError, match=r"`packages/lib`: the project depends on numpy"):
        read_project_inputs(str(root), replace(the_lock, python=pinned[1:]))
    # metadata such a setup.py computes is refused, saying why
    (root / "packages/lib/setup.py").write_text(
        "from setuptools import setup\nsetup(name='d', version='1', install_requires=R)\n"
    )
    with pytest.raises(SpecError, match=r"`install_requires=` is computed") as info:
        read_project_inputs(str(root), the_lock)
    assert "only for the project itself" in (info.value.hint or "")


def test_a_member_without_pyproject_or_setup_fails_the_build_naming_it(tmp_path: Path) -> None:
    root = project(tmp_path, "", **{"packages__lib__README": "x"})
    base = lock(())
    the_lock = replace(base, inputs=replace(base.inputs, members=("packages/lib",)))
    with pytest.raises(SpecError, match=r"local package `packages/lib` has no pyproject\.toml"):
        read_project_inputs(str(root), the_lock)


DYNAMIC = """\
[project]
name = "pkg-dynamic"
dynamic = ["version"]

[tool.setuptools.dynamic]
version = { attr = "pkg_dynamic.VERSION" }
"""


def test_a_setuptools_attr_version_is_read_from_the_modules_literal(tmp_path: Path) -> None:
    root = project(tmp_path, "project: editable\n", **{"pyproject.toml": DYNAMIC})
    module = root / "src" / "pkg_dynamic" / "__init__.py"
    module.parent.mkdir(parents=True)
    module.write_text('"""doc"""\nVERSION = "0.1"\nVERSION: str = "0.3.1"\n')
    base = lock(())
    the_lock = replace(base, inputs=replace(base.inputs, project="editable"))
    package = read_project_inputs(str(root), the_lock).package
    assert package is not None and package.version == "0.3.1"  # the last assignment wins
    # a computed value is never run: refused as before, naming the missing static version
    module.write_text("import subprocess\nVERSION = subprocess.check_output(['id'])\n")
    with pytest.raises(SpecError, match=r"has no static `version`"):
        read_project_inputs(str(root), the_lock)


def test_literal_attr_reads_only_top_level_string_literals() -> None:
    from envd.model.setupmeta import attr_module_files, dynamic_version_attr, literal_attr

    assert dynamic_version_attr(DYNAMIC) == "pkg_dynamic.VERSION"
    assert dynamic_version_attr(DYNAMIC.replace('dynamic = ["version"]', 'version = "1"')) is None
    assert attr_module_files("a.b.__version__")[0] == "src/a/b/__init__.py"
    assert literal_attr("__version__ = '2.0'\n", "pkg.__version__") == "2.0"
    assert literal_attr("def f():\n    __version__ = '9'\n", "pkg.__version__") is None
    assert literal_attr("__version__ = get()\n", "pkg.__version__") is None
    assert literal_attr("not python (", "pkg.__version__") is None


def test_a_setup_py_version_imported_from_the_package_is_read_from_its_literal(
    tmp_path: Path,
) -> None:
    setup_py = (
        "from setuptools import setup\nfrom mypkg.version import __version__ as V\n"
        "setup(name='mypkg', version=V, install_requires=['six'])\n"
    )
    root = project(tmp_path, "project: install\n", **{"setup.py": setup_py})
    assert load_spec(root).all_requirements == ("six",)  # locks; the version is read at build
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "version.py").write_text("__version__ = '0.9.1'\n")
    base = lock(())
    pinned = (PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),)
    the_lock = replace(base, inputs=replace(base.inputs, project="install"), python=pinned)
    package = read_project_inputs(str(root), the_lock).package
    assert package is not None and (package.name, package.version) == ("mypkg", "0.9.1")
    # `import pkg` then `version=pkg.__version__`: the same, from pkg's module
    attribute = read_setup(
        "import six\nfrom setuptools import setup\nsetup(version=six.VER)\n", None
    )
    assert (attribute.version, attribute.version_attr) == (None, "six.VER")
    # computed in the module: refused at build, naming the module attribute and the fix
    (root / "mypkg" / "version.py").write_text("__version__ = open('V').read()\n")
    with pytest.raises(SpecError, match=r"`mypkg\.version\.__version__`.*no literal string"):
        read_project_inputs(str(root), the_lock)
