"""The build plan is pure: keys change from the changed step on, and nowhere before."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from envd.model.lockfile import BaseLock, DebianPackage, Inputs, LockFile, PythonPackage, Target
from envd.model.plan import STEP_FILES, StepFile, make_plan, requirements_text


def lock(
    python: tuple[PythonPackage, ...] = (),
    setup: tuple[str, ...] = (),
    image: bool = False,
    system: tuple[DebianPackage, ...] = (),
    env: tuple[tuple[str, str], ...] = (("PYTHONHASHSEED", "0"),),
    indexes: tuple[str, ...] = (),
) -> LockFile:
    base = (
        BaseLock(kind="image", reference="python:3.11-slim", digest="sha256:" + "a" * 64)
        if image
        else BaseLock(
            kind="debian",
            reference="envd/base-debian:abc",
            digest="sha256:" + "b" * 64,
            suite="bookworm",
            tarball_sha256="sha256:" + "b" * 64,
        )
    )
    inputs = Inputs(
        base="debian:bookworm",
        python="3.11",
        system=(),
        requirements=("numpy",),
        indexes=indexes,
        cuda="",
        env=env,
        setup=setup,
    )
    return LockFile(
        "0.1.0",
        "0.13.9",
        inputs,
        "sha256:x",
        Target("3.11.2", "manylinux_2_36_x86_64", "2.36", "x86_64"),
        base,
        system,
        python,
    )


NUMPY = PythonPackage("numpy", "2.0.0", ("sha256:" + "1" * 64,))
SIX = PythonPackage("six", "1.16.0", ("sha256:" + "2" * 64,))


def keys(plan) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {s.name: s.key for s in plan.steps}


def test_plan_is_deterministic() -> None:
    assert make_plan("p", lock((NUMPY,))) == make_plan("p", lock((NUMPY,)))


def test_adding_a_package_changes_packages_step_on_only() -> None:
    before = keys(make_plan("p", lock((NUMPY,))))
    after = keys(make_plan("p", lock((NUMPY, SIX))))
    assert before["base"] == after["base"] and before["venv"] == after["venv"]
    assert before["packages"] != after["packages"] and before["metadata"] != after["metadata"]


def test_system_step_only_for_image_bases_and_kept_across_package_changes() -> None:
    debs = (DebianPackage("git", "1:2.39.5-0+deb12u1", "amd64"),)
    assert "system" not in keys(make_plan("p", lock((NUMPY,), system=debs)))
    a = keys(make_plan("p", lock((NUMPY,), image=True, system=debs)))
    b = keys(make_plan("p", lock((SIX,), image=True, system=debs)))
    assert a["system"] == b["system"] and a["packages"] != b["packages"]


def test_setup_steps_and_tag() -> None:
    plan = make_plan("churn", lock((NUMPY,), setup=("echo one", "echo two")))
    assert [s.name for s in plan.steps] == [
        "base",
        "venv",
        "packages",
        "setup[0]",
        "setup[1]",
        "metadata",
    ]
    assert plan.tag == f"envd/churn:{plan.final_key[:12]}"
    assert ("PYTHONHASHSEED", "0") in plan.env


def test_ca_and_uv_are_passed_per_command_not_baked() -> None:
    plan = make_plan("p", lock((NUMPY,)))
    packages = next(s for s in plan.steps if s.name == "packages")
    assert packages.uses_ca and packages.uses_uv and packages.network
    assert packages.argv[0] == "env" and "--require-hashes" in packages.argv
    assert not any(k in ("SSL_CERT_FILE", "UV_CACHE_DIR") for k, _ in plan.env)


def test_requirements_have_hashes() -> None:
    text = requirements_text(lock((NUMPY,)))
    assert text.startswith("numpy==2.0.0 \\\n    --hash=sha256:1111")


def test_no_packages_means_no_packages_step() -> None:
    assert "packages" not in keys(make_plan("p", lock(())))


def test_system_debs_go_to_the_cache_volume_not_the_image() -> None:
    debs = (DebianPackage("jq", "1.6-2.1", "amd64"),)
    plan = make_plan("p", lock((NUMPY,), image=True, system=debs))
    system = next(s for s in plan.steps if s.name == "system")
    assert system.uses_apt_cache and system.network
    script = system.argv[-1]
    assert (
        "jq=1.6-2.1" in script and "-o Dir::Cache::Archives=/var/cache/apt/envd-archives" in script
    )
    assert script.endswith("rm -rf /var/lib/apt/lists/*")


def test_projects_with_one_lock_share_every_step_but_metadata() -> None:
    """Projects with the same packages share every step but the last (labels name the project)."""
    a, b = keys(make_plan("a", lock((NUMPY,)))), keys(make_plan("b", lock((NUMPY,))))
    assert a["packages"] == b["packages"] and a["metadata"] != b["metadata"]


def test_only_wheels_are_installed_unless_a_source_build_is_asked_for() -> None:
    plain = next(s for s in make_plan("p", lock((NUMPY,))).steps if s.name == "packages")
    assert "--only-binary" in plain.argv and "--no-cache" not in plain.argv
    opted = replace(lock((NUMPY,)), inputs=replace(lock((NUMPY,)).inputs, from_source=("numpy",)))
    step = next(s for s in make_plan("p", opted).steps if s.name == "packages")
    argv = list(step.argv)
    assert argv[argv.index("--no-binary") + 1] == "numpy" and "--no-cache" in argv
    assert step.key != plain.key


def _with_setup_files(the_lock: LockFile, files: tuple[tuple[str, ...], ...]) -> LockFile:
    return replace(the_lock, inputs=replace(the_lock.inputs, setup_files=files))


def _file(path: str, content: str, executable: bool = False) -> StepFile:
    return StepFile(path, hashlib.sha256(content.encode()).hexdigest(), executable)


def test_a_setup_steps_files_are_in_its_key_and_nothing_before() -> None:
    the_lock = _with_setup_files(
        lock((NUMPY,), setup=("echo first", "bash postBuild", "echo last")),
        ((), ("postBuild",), ()),
    )
    one = make_plan("p", the_lock, setup_files={"postBuild": (_file("postBuild", "a"),)})
    two = make_plan("p", the_lock, setup_files={"postBuild": (_file("postBuild", "b"),)})
    a, b = keys(one), keys(two)
    assert a["packages"] == b["packages"] and a["setup[0]"] == b["setup[0]"]
    assert a["setup[1]"] != b["setup[1]"]
    assert a["setup[2]"] != b["setup[2]"] and a["metadata"] != b["metadata"]
    step = one.steps[[s.name for s in one.steps].index("setup[1]")]
    assert step.files == (_file("postBuild", "a"),)
    assert f"cd {STEP_FILES} && " in " ".join(step.argv) and step.argv[-1] == "bash postBuild"
    first = one.steps[[s.name for s in one.steps].index("setup[0]")]
    assert first.files == () and STEP_FILES not in " ".join(first.argv)
    # the executable bit is content too
    mode = make_plan("p", the_lock, setup_files={"postBuild": (_file("postBuild", "a", True),)})
    assert keys(mode)["setup[1]"] != a["setup[1]"]


def test_setup_steps_without_files_keep_their_keys() -> None:
    plain = lock((NUMPY,), setup=("echo one",))
    assert keys(make_plan("p", plain)) == keys(
        make_plan("p", plain, setup_files={"unused": (_file("unused", "x"),)})
    )


def test_a_folder_entry_gives_every_file_under_it_once_sorted() -> None:
    the_lock = _with_setup_files(lock((NUMPY,), setup=("ls",)), (("b", "conf/"),))
    files = {"conf/": (_file("conf/y", "y"), _file("b", "b")), "b": (_file("b", "b"),)}
    step = make_plan("p", the_lock, setup_files=files).steps[-2]
    assert [f.path for f in step.files] == ["b", "conf/y"]


def test_a_setup_file_the_builder_did_not_read_is_an_error() -> None:
    the_lock = _with_setup_files(lock((NUMPY,), setup=("bash postBuild",)), (("postBuild",),))
    with pytest.raises(KeyError):
        make_plan("p", the_lock, setup_files={})


def test_a_plan_made_without_reading_the_files_matches_no_build() -> None:
    the_lock = _with_setup_files(lock((NUMPY,), setup=("bash postBuild",)), (("postBuild",),))
    read = make_plan("p", the_lock, setup_files={"postBuild": (_file("postBuild", "a"),)})
    edited = make_plan("p", the_lock, setup_files={"postBuild": (_file("postBuild", "b"),)})
    unread = make_plan("p", the_lock)
    assert len({unread.tag, read.tag, edited.tag}) == 3
    plain = lock((NUMPY,))
    assert make_plan("p", plain, setup_files={}).tag == make_plan("p", plain).tag


def test_setup_files_leave_old_locks_inputs_hash_alone_and_are_a_staleness_reason() -> None:
    from envd.model.lockfile import hash_inputs, staleness

    the_lock = lock((NUMPY,), setup=("bash postBuild",))
    old = the_lock.inputs
    new = replace(old, setup_files=(("postBuild",),))
    assert hash_inputs(replace(old, setup_files=())) == hash_inputs(old)
    assert hash_inputs(new) != hash_inputs(old)
    assert staleness(replace(the_lock, inputs_hash=hash_inputs(old)), new) == [
        "setup files changed"
    ]


# ---------------------------------------------------------------- the shared-library check

TORCH_LIKE = "\n".join(
    [
        "envd-dist\ttorch\t2.5.1\t1\tnvidia-cublas-cu12,filelock",
        "envd-dist\tnvidia-cublas-cu12\t12.4.5.8\t0\t",
        "envd-dist\tnvidia-nvshmem-cu12\t3.2.5\t0\t",
        "envd-dist\tLightGBM\t4.6.0\t1\tnumpy,scipy",
        # torch's extension module: its closure (ldd) resolves libtorch_python in the wheel,
        # misses libcublas (preloaded from nvidia-cublas-cu12, which torch requires) and the
        # driver's libcuda (the container toolkit's)
        "envd-object\ttorch/_C.cpython-311-x86_64-linux-gnu.so\ttorch",
        "envd-needs\ttorch/_C.cpython-311-x86_64-linux-gnu.so\tlibtorch_python.so"
        "\ttorch/lib/libtorch_python.so",
        "envd-needs\ttorch/_C.cpython-311-x86_64-linux-gnu.so\tlibcublas.so.12\t",
        "envd-needs\ttorch/_C.cpython-311-x86_64-linux-gnu.so\tlibcuda.so.1\t",
        "envd-object\ttorch/lib/libtorch_python.so\ttorch",
        "envd-needs\ttorch/lib/libtorch_python.so\tlibcublas.so.12\t",
        "envd-object\ttorch/lib/libgomp.so.1\ttorch",
        "envd-object\tnvidia/cublas/lib/libcublas.so.12\tnvidia-cublas-cu12",
        # an optional transport nothing links: a note
        "envd-object\tnvidia/nvshmem/lib/nvshmem_transport_ucx.so.3\tnvidia-nvshmem-cu12",
        "envd-needs\tnvidia/nvshmem/lib/nvshmem_transport_ucx.so.3\tlibucp.so.0\t",
        # lightgbm loads lib_lightgbm.so by ctypes; torch's libgomp.so.1 does not serve it
        "envd-object\tlightgbm/lib/lib_lightgbm.so\tLightGBM",
        "envd-needs\tlightgbm/lib/lib_lightgbm.so\tlibgomp.so.1\t",
        "envd-named\tlightgbm/lib/lib_lightgbm.so",
        # a bundled Fortran runtime nothing links and no code names: loaded by nothing
        "envd-object\ttorch/lib/libgfortran.so.5\ttorch",
        "envd-needs\ttorch/lib/libgfortran.so.5\tlibquadmath.so.0\t",
        # an extension module no RECORD names: named by its folder
        "envd-object\tloose/_native.cpython-311-x86_64-linux-gnu.so\t",
        "envd-needs\tloose/_native.cpython-311-x86_64-linux-gnu.so\tlibfoo.so.3\t",
        "unrelated output",
    ]
)


def test_the_library_check_fails_on_what_an_import_misses_and_notes_optional_plugins() -> None:
    from envd.model.libraries import MissingLibrary, judge

    report = judge(TORCH_LIKE)
    assert report.failures == (
        MissingLibrary("LightGBM", "4.6.0", "libgomp.so.1", "lightgbm/lib/lib_lightgbm.so"),
        MissingLibrary("loose", "", "libfoo.so.3", "loose/_native.cpython-311-x86_64-linux-gnu.so"),
    )
    assert report.notes == (
        MissingLibrary(
            "nvidia-nvshmem-cu12",
            "3.2.5",
            "libucp.so.0",
            "nvidia/nvshmem/lib/nvshmem_transport_ucx.so.3",
        ),
        MissingLibrary("torch", "2.5.1", "libquadmath.so.0", "torch/lib/libgfortran.so.5"),
    )
    assert judge("envd-object\tx.so\t\n") == judge("")


def test_a_ctypes_library_needed_by_another_object_or_in_a_code_less_wheel_is_no_root() -> None:
    from envd.model.libraries import judge

    output = "\n".join(
        [
            "envd-dist\tpkg\t1\t1\t",
            "envd-dist\tlibsonly\t1\t0\t",
            "envd-object\tpkg/lib/libhelper.so\tpkg",  # needed by libcore: not a root
            "envd-needs\tpkg/lib/libhelper.so\tlibmpi.so.40\t",
            "envd-object\tpkg/lib/libcore.so\tpkg",
            "envd-needs\tpkg/lib/libcore.so\tlibhelper.so\tpkg/lib/libhelper.so",
            "envd-needs\tpkg/lib/libcore.so\tlibmpi.so.40\t",
            "envd-named\tpkg/lib/libcore.so",
            "envd-named\tpkg/lib/libhelper.so",
            "envd-object\tlibsonly/lib/libx.so.1\tlibsonly",  # nothing but libraries
            "envd-needs\tlibsonly/lib/libx.so.1\tlibfabric.so.1\t",
        ]
    )
    report = judge(output)
    # libcore is the root; its closure (ldd lists it) misses libmpi: a failure of pkg
    assert [(m.distribution, m.soname) for m in report.failures] == [("pkg", "libmpi.so.40")]
    assert [(m.distribution, m.soname) for m in report.notes] == [("libsonly", "libfabric.so.1")]


def test_extension_modules_are_told_from_libraries() -> None:
    from envd.model.libraries import is_extension_module

    assert is_extension_module("torch/_C.cpython-311-x86_64-linux-gnu.so")
    assert is_extension_module("cryptography/hazmat/bindings/_rust.abi3.so")
    assert is_extension_module("pkg/_speedups.so")
    assert not is_extension_module("torch/lib/libtorch.so")
    assert not is_extension_module("nvidia/nvshmem/lib/nvshmem_bootstrap_mpi.so")
    assert not is_extension_module("pkg/plugin.so.3")


def test_missing_libraries_are_named_with_their_debian_package() -> None:
    from envd.model.libraries import failure_message, judge, needed_packages, notes_message

    report = judge(TORCH_LIKE)
    text = failure_message(report.failures)
    assert (
        "LightGBM needs libgomp.so.1 (lightgbm/lib/lib_lightgbm.so): Debian's libgomp1 "
        "provides it" in text
    )
    assert "loose needs libfoo.so.3" in text and "keywords=libfoo.so.3" in text
    assert needed_packages(report.failures) == {"lightgbm==4.6.0": (("libgomp.so.1", "libgomp1"),)}
    assert "nvidia-nvshmem-cu12 (libucp.so.0)" in notes_message(report.notes)


def test_the_check_script_reads_real_objects(tmp_path: Path) -> None:
    """The in-container script, run here on objects built with gcc: RECORD names the
    distribution, ldd resolves as the loader would."""
    import shutil
    import subprocess
    import sys

    from envd.model.libraries import CHECK_SCRIPT, judge

    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("needs gcc and ldd")
    stubs, site = tmp_path / "stubs", tmp_path / "site"
    stubs.mkdir()

    def so(path: Path, soname: str = "", links: tuple[str, ...] = ()) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tmp_path / "x.c"
        source.write_text("int envd_x(void) { return 1; }\n")
        argv = ["gcc", "-shared", "-fPIC", "-o", str(path), str(source)]
        argv += [f"-Wl,-soname,{soname}"] if soname else []
        argv += [f"-L{stubs}", "-Wl,--no-as-needed", *(f"-l:{name}" for name in links)]
        subprocess.run(argv, check=True)

    so(stubs / "libenvdgone.so.1", "libenvdgone.so.1")
    so(stubs / "libenvdplug.so.2", "libenvdplug.so.2")
    so(stubs / "libenvdown.so.1", "libenvdown.so.1")
    ext = "_ext.cpython-311-x86_64-linux-gnu.so"
    so(site / "gompy" / ext, links=("libenvdgone.so.1",))
    so(site / "gompy" / "_own.cpython-311-x86_64-linux-gnu.so", links=("libenvdown.so.1",))
    (site / "gompy" / "lib").mkdir()
    shutil.copy(stubs / "libenvdown.so.1", site / "gompy" / "lib" / "libenvdown.so.1")
    so(site / "gompy" / "plugins" / "libplug.so", links=("libenvdplug.so.2",))
    # two libraries nothing links: one the code loads by name (ctypes), one it never names
    so(site / "gompy" / "lib" / "libctyped.so", links=("libenvdgone.so.1",))
    so(site / "gompy" / "lib" / "libbundled.so.5", links=("libenvdplug.so.2",))
    (site / "gompy" / "__init__.py").write_text("")
    (site / "gompy" / "core.py").write_text("lib = ctypes.CDLL(folder / 'libctyped.so')\n")
    (site / "carrier" / "lib").mkdir(parents=True)  # ships a file of the missing name
    shutil.copy(stubs / "libenvdgone.so.1", site / "carrier" / "lib" / "libenvdgone.so.1")
    for name, files in {
        "gompy": [
            f"gompy/{ext}",
            "gompy/_own.cpython-311-x86_64-linux-gnu.so",
            "gompy/lib/libenvdown.so.1",
            "gompy/plugins/libplug.so",
            "gompy/lib/libctyped.so",
            "gompy/lib/libbundled.so.5",
            "gompy/core.py",
        ],
        "carrier": ["carrier/lib/libenvdgone.so.1"],
    }.items():
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    out = subprocess.run(
        [sys.executable, "-I", "-c", CHECK_SCRIPT, str(site)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report = judge(out)
    assert "envd-named\tgompy/lib/libctyped.so" in out.splitlines()
    assert [(m.distribution, m.soname, m.path) for m in report.failures] == [
        ("gompy", "libenvdgone.so.1", f"gompy/{ext}")
    ]
    assert [(m.distribution, m.soname, m.path) for m in report.notes] == [
        ("gompy", "libenvdplug.so.2", "gompy/lib/libbundled.so.5")
    ]
    # the ctypes-loaded library is a root: what it misses fails (listed once per soname)
    both = judge(out.replace(f"gompy/{ext}\tlibenvdgone.so.1", "gompy/x\tlibenvdgone.so.1"))
    assert [(m.soname, m.path) for m in both.failures] == [
        ("libenvdgone.so.1", "gompy/lib/libctyped.so")
    ]


def test_the_library_check_looks_in_the_venvs_site_packages() -> None:
    from envd.model.libraries import check_argv

    argv = check_argv("/opt/venv", "/opt/venv/lib/python3.11/site-packages")
    assert argv[:3] == ["/opt/venv/bin/python", "-I", "-c"]
    assert argv[-1] == "/opt/venv/lib/python3.11/site-packages" and "ldd" in argv[3]


def test_lock_adds_the_debian_packages_pins_need_unless_named_or_present() -> None:
    from envd.model.apt import dumps_needs, loads_needs, system_additions

    learned = {"gompy==1.0": loads_needs(dumps_needs([("libgomp.so.1", "libgomp1")]))}
    pins = [("gompy", "1.0"), ("lightgbm", "4.6.0"), ("six", "1.16.0")]
    added = system_additions(pins, learned, have=["libc6"])
    assert [a.notice() for a in added] == ["added libgomp1: gompy needs libgomp.so.1"]
    assert system_additions([("lightgbm", "4.6.0")], {}, [])[0].notice() == (
        "added libgomp1: lightgbm needs libgomp.so.1"
    )
    assert system_additions(pins, learned, have=["libgomp1"]) == ()  # `system:` wins
    assert system_additions([("gompy", "2.0")], learned, []) == ()  # another version
    assert loads_needs('[["x.so.1", "bad name; rm -rf /"]]') == ()
    assert loads_needs("not json") == ()


def test_a_registry_images_installed_packages_are_read_from_dpkg() -> None:
    from envd.model.apt import parse_installed

    output = "ii  libgomp1:amd64\nrc  oldpkg\nii  zlib1g\nii  bad;name\n"
    assert parse_installed(output) == ["libgomp1", "zlib1g"]


PYPROJECT = """
[project]
name = "My-Pkg"
version = "1.2"
description = "one\\n two"
requires-python = ">=3.10"
dependencies = ["six>=1"]
[project.scripts]
mine = "my_pkg.cli:main"
"""


def _project_lock(mode: str) -> LockFile:
    base = lock((NUMPY,), setup=("echo after",))
    return replace(base, inputs=replace(base.inputs, project=mode))


def test_the_project_step_writes_a_dist_info_its_record_owns() -> None:
    import base64
    import csv

    from envd.model.plan import project_files, read_pyproject

    package = replace(read_pyproject(PYPROJECT), source="src")
    files, generated = project_files(package, "editable", "3.11.2")
    site = "opt/venv/lib/python3.11/site-packages"
    by_path = {f.path: f for f in files}
    dist = f"{site}/my_pkg-1.2.dist-info"
    assert set(by_path) == {
        f"{dist}/{n}"
        for n in ("METADATA", "INSTALLER", "RECORD", "direct_url.json", "entry_points.txt")
    } | {f"{site}/__editable__.my_pkg-1.2.pth", "opt/venv/bin/mine"}
    assert all(hashlib.sha256(generated[f.sha256]).hexdigest() == f.sha256 for f in files)
    assert generated[by_path[f"{site}/__editable__.my_pkg-1.2.pth"].sha256] == b"/workspace/src\n"
    metadata = generated[by_path[f"{dist}/METADATA"].sha256].decode()
    assert "Name: My-Pkg\nVersion: 1.2\nSummary: one two\n" in metadata
    assert "Requires-Dist: six>=1" in metadata
    assert by_path["opt/venv/bin/mine"].executable
    rows = list(csv.reader(generated[by_path[f"{dist}/RECORD"].sha256].decode().splitlines()))
    recorded = {row[0]: row[1] for row in rows}
    assert recorded.pop("my_pkg-1.2.dist-info/RECORD") == ""
    for path, f in by_path.items():
        if path.endswith("/RECORD"):
            continue
        relative = path.removeprefix(site + "/") if path.startswith(site) else "../../../bin/mine"
        digest = base64.urlsafe_b64decode(recorded.pop(relative)[7:] + "==").hex()
        assert digest == f.sha256
    assert recorded == {}


def test_the_project_step_comes_after_packages_and_keys_its_metadata() -> None:
    from envd.model.plan import read_pyproject

    one = read_pyproject(PYPROJECT)
    two = read_pyproject(PYPROJECT.replace('version = "1.2"', 'version = "1.3"'))
    the_lock = _project_lock("editable")
    a, b = make_plan("p", the_lock, package=one), make_plan("p", the_lock, package=two)
    assert [s.name for s in a.steps] == [
        "base",
        "venv",
        "packages",
        "project",
        "setup[0]",
        "metadata",
    ]
    ka, kb = keys(a), keys(b)
    assert ka["packages"] == kb["packages"] and ka["project"] != kb["project"]
    assert ka["setup[0]"] != kb["setup[0]"]
    # editable: the code itself is not content (it is live at /workspace); install: it is
    code = (StepFile("my_pkg/__init__.py", "1" * 64),)
    assert keys(make_plan("p", the_lock, package=replace(one, files=code))) == ka
    installed = _project_lock("install")
    ki = keys(make_plan("p", installed, package=replace(one, files=code)))
    other = (StepFile("my_pkg/__init__.py", "2" * 64),)
    assert (
        ki["project"]
        != keys(make_plan("p", installed, package=replace(one, files=other)))["project"]
    )
    assert make_plan("p", the_lock).tag != a.tag  # not read: matches no build
    assert "project" not in keys(make_plan("p", lock((NUMPY,))))


def test_pyproject_without_what_envd_needs_is_named() -> None:
    from envd.model.plan import ProjectError, read_pyproject

    with pytest.raises(ProjectError, match="static `version`"):
        read_pyproject('[project]\nname = "x"\ndynamic = ["version"]\n')
    with pytest.raises(ProjectError, match=r"no \[project\] table"):
        read_pyproject("[tool.poetry]\nname = 'x'\n")


def test_the_builder_reads_the_project_by_content(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from envd.errors import SpecError
    from envd.services.builder import read_project_inputs

    (tmp_path / "src" / "my_pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "src" / "my_pkg" / "__init__.py").write_text("VALUE = 1\n")
    (tmp_path / "src" / "my_pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (tmp_path / "postBuild").write_text("echo hi\n")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    base = lock((NUMPY,), setup=("bash postBuild",))
    the_lock = replace(
        base,
        inputs=replace(base.inputs, project="install", setup_files=(("postBuild",),)),
        python=(PythonPackage("six", "1.17.0", ("sha256:" + "3" * 64,)),),
    )
    read = read_project_inputs(str(tmp_path), the_lock)
    digest = hashlib.sha256(b"echo hi\n").hexdigest()
    assert read.setup_files == {"postBuild": (StepFile("postBuild", digest),)}
    assert read.contents[digest] == b"echo hi\n"
    assert read.package is not None and read.package.source == "src"
    assert [f.path for f in read.package.files] == ["my_pkg/__init__.py"]
    assert read.package.version == "1.2"

    # the project's dependencies must be locked
    with pytest.raises(SpecError, match=r"depends on six, which envd\.lock does not pin"):
        read_project_inputs(str(tmp_path), replace(the_lock, python=(NUMPY,)))
    # a setup file that is gone is named
    (tmp_path / "postBuild").unlink()
    with pytest.raises(SpecError, match="names postBuild, which does not exist"):
        read_project_inputs(str(tmp_path), the_lock)


def test_locks_without_the_new_inputs_read_and_write_as_before() -> None:
    import json

    from envd.model.lockfile import dumps, hash_inputs, loads

    plain = lock((NUMPY,), setup=("bash postBuild",))
    plain = replace(plain, inputs_hash=hash_inputs(plain.inputs))
    text = dumps(plain)
    inputs = json.loads(text)["inputs"]
    # the text (and so the integrity record) of a lock written before these keys existed
    assert "setup_files" not in inputs and "project" not in inputs
    assert dumps(loads(text, "envd.lock")) == text
    with_files = replace(plain.inputs, setup_files=(("postBuild", "conf/"),), project="editable")
    newer = replace(plain, inputs=with_files, inputs_hash=hash_inputs(with_files))
    again = loads(dumps(newer), "envd.lock")
    assert again.inputs.setup_files == (("postBuild", "conf/"),)
    assert again.inputs.project == "editable"


def test_setup_files_are_read_bounded_and_inside_the_project(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from envd.errors import SpecError
    from envd.gateways.projectfiles import read_setup_files

    project = tmp_path / "p"
    (project / "conf" / "sub").mkdir(parents=True)
    (project / "conf" / "b.txt").write_text("b")
    (project / "conf" / "sub" / "a.txt").write_text("a")
    (project / "run.sh").write_text("echo")
    (project / "run.sh").chmod(0o755)
    (tmp_path / "secret").write_text("outside")
    (project / "conf" / "link").symlink_to(tmp_path / "secret")
    (project / "escape").symlink_to(tmp_path / "secret")
    read = read_setup_files(project, ["conf/", "run.sh"])
    assert [(path, data) for path, data, _ in read["conf/"]] == [
        ("conf/b.txt", b"b"),
        ("conf/sub/a.txt", b"a"),
    ]
    assert read["run.sh"] == [("run.sh", b"echo", True)]
    with pytest.raises(SpecError, match="outside the project"):
        read_setup_files(project, ["escape"])
    with pytest.raises(SpecError, match="larger than the limit"):
        read_setup_files(project, ["run.sh"], limit=2)


# ---------------------------------------------------------------- Debian's Contents index

CONTENTS = (
    b"usr/lib/x86_64-linux-gnu/libgomp.so.1                    libs/libgomp1\n"
    b"usr/lib/x86_64-linux-gnu/libmpi.so.40  libs/libopenmpi3,libdevel/libopenmpi-dev\n"
    b"usr/share/doc/libgomp.so.1/changelog.gz                  doc/not-a-library\n"
    b"usr/lib/x86_64-linux-gnu/libfoo.so.3                     libs/bad;name\n"
)


def test_missing_sonames_resolve_to_packages_from_the_contents_index() -> None:
    from envd.model.apt import contents_packages

    lines = CONTENTS.splitlines(keepends=True)
    wanted = ["libgomp.so.1", "libmpi.so.40", "libfoo.so.3", "libnone.so.1"]
    assert contents_packages(lines, wanted) == {
        "libgomp.so.1": "libgomp1",
        "libmpi.so.40": "libopenmpi3",  # (several: the runtime package)
    }


def test_the_contents_index_is_fetched_once_and_read_from_the_cache(tmp_path: Path) -> None:
    import functools
    import gzip
    import http.server
    import threading

    from envd.gateways.debian_contents import lookup

    served = tmp_path / "mirror" / "dists" / "bookworm" / "main"
    served.mkdir(parents=True)
    (served / "Contents-amd64.gz").write_bytes(gzip.compress(CONTENTS))
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "mirror")
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mirror = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        found = lookup(mirror, "bookworm", "amd64", ["libgomp.so.1"], tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    assert found == {"libgomp.so.1": "libgomp1"}
    # the server is gone: the cached index answers
    assert lookup(mirror, "bookworm", "amd64", ["libmpi.so.40"], tmp_path / "cache") == {
        "libmpi.so.40": "libopenmpi3"
    }


def test_path_in_env_replaces_the_images_path_for_setup_and_commands() -> None:
    default = dict(make_plan("p", lock((NUMPY,), setup=("tool",))).env)
    assert default["PATH"].startswith("/opt/venv/bin:")
    env = (("PATH", "/opt/tools/bin:/usr/bin:/bin"), ("PYTHONHASHSEED", "0"))
    plan = make_plan("p", lock((NUMPY,), setup=("tool",), env=env))
    assert dict(plan.env)["PATH"] == "/opt/tools/bin:/usr/bin:/bin"
    setup = next(s for s in plan.steps if s.name == "setup[0]")
    assert "PATH=/opt/tools/bin:/usr/bin:/bin" in setup.argv
