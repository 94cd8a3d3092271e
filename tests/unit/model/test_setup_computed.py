"""setup.py metadata computed by the legacy backend (at lock, in a container): what envd reads
of what the backend wrote, what it records in envd.lock, and how the build installs from it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.model.lockfile import PythonPackage, dumps, hash_inputs, loads
from envd.model.plan import project_files
from envd.model.setupmeta import ComputedMetadata, MetadataError, named_files, parse_metadata
from envd.services.planning import read_project_inputs
from tests.unit.model.test_plan import lock

METADATA = """\
Metadata-Version: 2.1
Name: my-pkg
Version: 0.4.2
Summary: A package
  folded on
Requires-Python: >=3.8
Requires-Dist: six>=1.16
Requires-Dist: attrs==23.2.0 ; python_version >= "3.8"
Provides-Extra: dev
Requires-Dist: pytest ; extra == "dev"

Requires-Dist: this is the long description, not a header
"""

ENTRY_POINTS = "[console_scripts]\nmp = mypkg.cli:main\n\n[other]\nx = y:z\n"


def test_metadata_headers_are_read_and_extras_left_out() -> None:
    meta = parse_metadata(METADATA, ENTRY_POINTS)
    assert (meta.name, meta.version, meta.requires_python) == ("my-pkg", "0.4.2", ">=3.8")
    assert meta.summary == "A package folded on"
    assert meta.requires == ("six>=1.16", 'attrs==23.2.0 ; python_version >= "3.8"')
    assert meta.scripts == (("mp", "mypkg.cli:main"),)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("Name: a\n", "no Name or no Version"),
        ("Name: a\nVersion: 1\nRequires-Dist: not a ( requirement\n", "is not PEP 508"),
        ("Name: a\nVersion: 1\nthis is no header\n", "not a header"),
        ("Name: a\nVersion: 1\nSummary: " + "x" * 300_000 + "\n", "larger than 256 KiB"),
    ],
)
def test_unsound_metadata_is_refused_naming_why(text: str, said: str) -> None:
    with pytest.raises(MetadataError, match=said):
        parse_metadata(text)


def test_files_setup_py_names_literally_are_found() -> None:
    setup_py = (
        "import os, pathlib\n"
        "here = os.path.abspath(os.path.dirname(__file__))\n"
        "reqs = open(os.path.join(here, 'requirements', 'base.txt')).read()\n"
        "readme = (pathlib.Path(__file__).parent / 'docs' / 'README.md').read_text()\n"
        "exec(open('pkg/version.py').read())\n"
    )
    found = named_files(setup_py)
    assert "requirements/base.txt" in found
    assert "docs/README.md" in found
    assert "pkg/version.py" in found
    assert named_files("this is not python (") == ()


def _computed_lock() -> tuple[object, ComputedMetadata]:
    base = lock(())
    computed = replace(
        parse_metadata(METADATA, ENTRY_POINTS),
        backend="setuptools.build_meta:__legacy__ (setuptools 66.1.1, egg_info)",
        files=("setup.py sha256:" + "a" * 64,),
    )
    inputs = replace(base.inputs, project="editable", computed=computed.files)
    pinned = (
        PythonPackage("attrs", "23.2.0", ("sha256:" + "1" * 64,)),
        PythonPackage("six", "1.17.0", ("sha256:" + "2" * 64,)),
    )
    the_lock = replace(
        base, inputs=inputs, inputs_hash=hash_inputs(inputs), python=pinned, computed=computed
    )
    return the_lock, computed


def test_the_lock_records_what_was_computed_and_reads_it_back() -> None:
    the_lock, computed = _computed_lock()
    text = dumps(the_lock)  # type: ignore[arg-type]
    assert '"computed": {' in text and "setuptools 66.1.1" in text
    assert loads(text, "envd.lock").computed == computed
    # an edit of the computed metadata is named, as every pinned fact's is
    with pytest.raises(Exception, match="computed metadata changed"):
        loads(text.replace('"0.4.2"', '"0.4.3"'), "envd.lock")


def test_a_lock_without_computed_metadata_keeps_its_bytes() -> None:
    plain = lock(())
    plain = replace(plain, inputs_hash=hash_inputs(plain.inputs))
    text = dumps(plain)
    assert "computed" not in text
    assert loads(text, "envd.lock") == plain


SETUP_PY = (
    "from setuptools import setup\n"
    "reqs = open('requirements.txt').read().splitlines()\n"
    "setup(name='my-pkg', version=open('VERSION').read().strip(), install_requires=reqs,\n"
    "      entry_points={'console_scripts': ['mp = mypkg.cli:main']})\n"
)


def test_the_build_installs_the_project_from_the_locks_computed_metadata(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "setup.py").write_text(SETUP_PY)
    (root / "requirements.txt").write_text("six>=1.16\n")
    the_lock, _ = _computed_lock()
    package = read_project_inputs(str(root), the_lock).package  # type: ignore[arg-type]
    assert package is not None
    assert (package.name, package.version, package.source) == ("my-pkg", "0.4.2", "")
    files, made = project_files(package, "editable", "3.11")
    assert "opt/venv/bin/mp" in [f.path for f in files]
    metadata = next(
        made[f.sha256] for f in files if f.path.endswith("my_pkg-0.4.2.dist-info/METADATA")
    )
    assert b"Requires-Dist: six>=1.16\n" in metadata
    # a lock made before the metadata was computed says the fix, as before
    plain = replace(the_lock, computed=ComputedMetadata())  # type: ignore[type-var]
    with pytest.raises(SpecError, match=r"`version=` is computed when setup\.py runs"):
        read_project_inputs(str(root), plain)
