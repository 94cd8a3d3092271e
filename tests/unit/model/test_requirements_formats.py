"""`requirements:` in every common format: pip files as pip reads them, locks by their name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envd.errors import LockError, SpecError
from envd.gateways.projectfiles import load_spec
from envd.model.lockfile import PythonPackage
from envd.model.spec import FilePin
from envd.model.spec_requirements import requirements_format
from envd.services.locker import _pins_hold, keep_file_hashes

SPEC = "base: {debian: bookworm}\n"
A = "a" * 64
B = "b" * 64
C = "c" * 64


def project(tmp_path: Path, spec: str, **files: str) -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "envd.yaml").write_text(SPEC + spec)
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_pip_syntax_continuations_comments_markers_hashes(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: requirements.txt\n",
        **{
            "requirements.txt": (
                "# pinned by pip-compile\n"
                "six==1.16.0 \\\n"
                f"    --hash=sha256:{A} \\\n"
                f"    --hash=sha256:{B}\n"
                "idna>=3 ; python_version >= '3.8'  # a comment\n"
            )
        },
    )
    spec = load_spec(root)
    assert spec.requirements == ("six==1.16.0", 'idna>=3; python_version >= "3.8"')
    assert spec.pins == (FilePin("six", "1.16.0", (A, B), str(root / "requirements.txt"), 2),)


def test_includes_are_relative_to_the_including_file_and_indexes_mapped(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: reqs/main.txt\nindexes: [https://example.org/simple]\n",
        **{
            "reqs__main.txt": (
                "--index-url https://pypi.org/simple\n"
                "--extra-index-url https://download.pytorch.org/whl/cpu\n"
                "-r base.txt\n-c ../constraints/c.txt\nrequests\n"
            ),
            "reqs__base.txt": "six==1.16.0\n",
            "constraints__c.txt": "idna<4\n",
        },
    )
    spec = load_spec(root)
    assert spec.requirements == ("six==1.16.0", "requests")
    assert spec.constraints == ("idna<4",)
    assert spec.indexes == ("https://example.org/simple", "https://download.pytorch.org/whl/cpu")
    assert spec.requirements_files == ("reqs/main.txt", "reqs/base.txt", "constraints/c.txt")


def test_a_bad_line_in_an_included_file_names_that_file_and_line(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: r.txt\n",
        **{"r.txt": "six\n-r sub/more.txt\n", "sub__more.txt": "idna\n\nnot a requirement!!\n"},
    )
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert info.value.file == str(root / "sub" / "more.txt")
    assert info.value.line == 3
    assert info.value.hint


def test_a_direct_url_in_an_included_file_is_refused_at_its_line(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        "requirements: r.txt\n",
        **{"r.txt": "-r more.txt\n", "more.txt": "six\nx @ git+https://h/x\n"},
    )
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert (info.value.file, info.value.line) == (str(root / "more.txt"), 2)
    assert "VCS requirement" in info.value.message


@pytest.mark.parametrize("include", ["../outside.txt", "/etc/hostname"])
def test_an_include_outside_the_project_is_refused(tmp_path: Path, include: str) -> None:
    root = project(tmp_path, "requirements: r.txt\n", **{"r.txt": f"six\n-r {include}\n"})
    (tmp_path / "outside.txt").write_text("idna\n")
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert (info.value.file, info.value.line) == (str(root / "r.txt"), 2)
    assert "outside the project" in info.value.message


def test_an_include_cycle_is_named(tmp_path: Path) -> None:
    root = project(
        tmp_path, "requirements: a.txt\n", **{"a.txt": "-r b.txt\n", "b.txt": "-r a.txt\n"}
    )
    with pytest.raises(SpecError, match=r"include cycle: a\.txt -> b\.txt -> a\.txt"):
        load_spec(root)


def test_editable_project_needs_the_project_key(tmp_path: Path) -> None:
    files = {"r.txt": "six\n-e .\n", "pyproject.toml": "[project]\nname='x'\n"}
    with pytest.raises(SpecError) as info:
        load_spec(project(tmp_path / "a", "requirements: r.txt\n", **files))
    assert info.value.line == 2 and "project: editable" in (info.value.hint or "")
    spec = load_spec(project(tmp_path / "b", "requirements: r.txt\nproject: editable\n", **files))
    assert spec.requirements == ("six",) and spec.project == "editable"


UV_LOCK = f"""version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = {{ editable = "." }}

[[package]]
name = "six"
version = "1.16.0"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files/six-1.16.0.tar.gz", hash = "sha256:{A}" }}
wheels = [{{ url = "https://files/six-1.16.0-py2.py3-none-any.whl", hash = "sha256:{B}" }}]
"""

PIPFILE_LOCK = json.dumps(
    {
        "_meta": {"sources": [{"url": "https://pypi.org/simple"}]},
        "default": {"six": {"version": "==1.16.0", "hashes": [f"sha256:{A}"]}},
        "develop": {"pytest": {"version": "==8.0.0"}},
    },
    indent=4,
)

PYLOCK = f"""lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "six"
version = "1.16.0"
index = "https://example.org/simple"
wheels = [
  {{ url = "https://files/six-1.16.0-py2.py3-none-any.whl", hashes = {{ sha256 = "{C}" }} }},
]
"""


@pytest.mark.parametrize(
    ("name", "text", "digests", "indexes"),
    [
        ("uv.lock", UV_LOCK, (A, B), ()),
        ("Pipfile.lock", PIPFILE_LOCK, (A,), ()),
        ("pylock.toml", PYLOCK, (C,), ("https://example.org/simple",)),
        ("pylock.dev.toml", PYLOCK, (C,), ("https://example.org/simple",)),
    ],
)
def test_locks_are_read_as_what_they_are(
    tmp_path: Path, name: str, text: str, digests: tuple[str, ...], indexes: tuple[str, ...]
) -> None:
    root = project(tmp_path, f"requirements: {name}\n", **{name: text})
    spec = load_spec(root)
    assert spec.requirements == ("six==1.16.0",)
    assert [(p.name, p.version, p.sha256, p.source) for p in spec.pins] == [
        ("six", "1.16.0", digests, str(root / name))
    ]
    assert spec.pins[0].line is not None
    assert spec.indexes == indexes


def test_pyproject_gives_its_dependencies(tmp_path: Path) -> None:
    text = '[project]\nname = "app"\ndependencies = ["six==1.16.0", "idna>=3"]\n'
    spec = load_spec(
        project(tmp_path, "requirements: pyproject.toml\n", **{"pyproject.toml": text})
    )
    assert spec.requirements == ("six==1.16.0", "idna>=3")
    assert spec.project is None


def test_a_bad_lock_names_the_absolute_file_and_line(tmp_path: Path) -> None:
    root = project(tmp_path, "requirements: uv.lock\n", **{"uv.lock": "version = 1\n[[package]\n"})
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert (info.value.file, info.value.line) == (str(root / "uv.lock"), 2)


def test_formats_by_name() -> None:
    assert requirements_format("deps/requirements-dev.txt") == "requirements"
    assert requirements_format("sub/pyproject.toml") == "pyproject"
    assert requirements_format("uv.lock") == "uv.lock"
    assert requirements_format("pylock.gpu.toml") == "pylock"
    assert requirements_format("locks.toml") == "requirements"


# ---------------------------------------------------------------- the lock keeps the hashes


def resolved(*hashes: str) -> tuple[PythonPackage, ...]:
    return (
        PythonPackage("idna", "3.7", ("sha256:" + C,)),
        PythonPackage("six", "1.16.0", tuple(f"sha256:{h}" for h in hashes)),
    )


def test_the_lock_keeps_exactly_the_files_hashes() -> None:
    pins = (FilePin("six", "1.16", (A,), "/p/r.txt", 3),)  # 1.16 is 1.16.0
    python = keep_file_hashes(resolved(A, B), pins)
    assert python[1].hashes == ("sha256:" + A,)
    assert python[0] == resolved()[0]
    assert _pins_hold(python, pins) and not _pins_hold(resolved(A, B), pins)


def test_a_hash_the_index_does_not_offer_is_refused_naming_file_and_line() -> None:
    with pytest.raises(LockError) as info:
        keep_file_hashes(resolved(B), (FilePin("six", "1.16.0", (A,), "/p/r.txt", 3),))
    assert info.value.message.startswith("/p/r.txt:3: six==1.16.0")
    assert f"sha256:{A}" in info.value.message


def test_an_include_symlinked_outside_the_project_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path, "requirements: r.txt\n", **{"r.txt": "six\n\n-c link.txt\n"})
    (tmp_path / "outside.txt").write_text("idna<4\n")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(SpecError) as info:
        load_spec(root)
    assert (info.value.file, info.value.line) == (str(root / "r.txt"), 3)
    assert "`link.txt` resolves to" in info.value.message
    assert "outside the project" in info.value.message


def test_a_lock_may_be_larger_than_a_requirements_file(tmp_path: Path) -> None:
    padding = "# " + "x" * 1000 + "\n"
    root = project(tmp_path, "requirements: uv.lock\n", **{"uv.lock": padding * 200 + UV_LOCK})
    assert load_spec(root, requirements_limit=100_000).requirements == ("six==1.16.0",)
    big = project(tmp_path / "b", "requirements: r.txt\n", **{"r.txt": padding * 200 + "six\n"})
    with pytest.raises(SpecError, match="larger than the limit"):
        load_spec(big, requirements_limit=100_000)


UV_LOCK_WITH_EDGES = f"""version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "colorama", marker = "sys_platform == 'win32'" }},
    {{ name = "Requests", extra = ["socks"] }},
]

[package.dev-dependencies]
dev = [{{ name = "six" }}]

[[package]]
name = "colorama"
version = "0.4.6"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files/colorama-0.4.6-py2.py3-none-any.whl", hash = "sha256:{A}" }}]

[[package]]
name = "requests"
version = "2.32.3"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files/requests-2.32.3-py3-none-any.whl", hash = "sha256:{B}" }}]

[[package]]
name = "six"
version = "1.16.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files/six-1.16.0-py2.py3-none-any.whl", hash = "sha256:{C}" }}]
"""


def test_a_uv_lock_keeps_its_dependency_markers_and_constrains_the_rest(tmp_path: Path) -> None:
    root = project(tmp_path, "requirements: uv.lock\n", **{"uv.lock": UV_LOCK_WITH_EDGES})
    spec = load_spec(root)
    assert spec.requirements == (
        'colorama==0.4.6; sys_platform == "win32"',
        "requests[socks]==2.32.3",
        "six==1.16.0",
    )
    assert spec.constraints == ("colorama==0.4.6", "requests==2.32.3", "six==1.16.0")
    assert {p.name: p.sha256 for p in spec.pins} == {
        "colorama": (A,),
        "requests": (B,),
        "six": (C,),
    }
