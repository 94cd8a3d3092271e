"""setup.py's computed metadata: the throwaway container it runs in (a fake engine here; the
real one in tests/integration/test_project_install.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.gateways.engine import Mount
from envd.gateways.engine.records import RunResult
from envd.services import setup_container
from envd.services.setup_container import SetupMetadataFailed

METADATA = "Metadata-Version: 2.1\nName: my-pkg\nVersion: 0.4.2\nRequires-Dist: six>=1.16"


@dataclass
class FakeEngine:
    """Answers `run` as the container would, recording what it was asked."""

    lines: Callable[[str], list[str]]
    exit_code: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def run(self, image: str, argv: Sequence[str], **kwargs: Any) -> RunResult:
        self.calls.append({"image": image, "argv": list(argv), **kwargs})
        mount: Mount = kwargs["mounts"][0]
        self.seen = sorted(
            p.relative_to(mount.source).as_posix()
            for p in Path(mount.source).rglob("*")
            if p.is_file()
        )
        sink = kwargs["on_output"]
        for line in self.lines(argv[-1]):
            sink(line)
        return RunResult(exit_code=self.exit_code, output="")


def answer(payload: Mapping[str, object]) -> Callable[[str], list[str]]:
    return lambda nonce: [
        "running egg_info",
        f"ENVD-SETUP-METADATA {nonce} {json.dumps(payload)}",
    ]


def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for relpath, text in {
        "setup.py": "from setuptools import setup\nsetup(**META)\n",
        "requirements.txt": "six>=1.16\n",
        "mypkg/__init__.py": "",
        "mypkg/data.bin": "x",
        ".env": "SECRET=1\n",
        ".git/config": "[core]\n",
        "big.txt": "x" * (setup_container.MAX_FILE_BYTES + 1),
    }.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(text)
    return root


def test_it_runs_in_a_bounded_throwaway_container_with_only_source_files(tmp_path: Path) -> None:
    payload = {
        "metadata": METADATA,
        "entry_points": "",
        "setuptools": "66.1.1",
        "via": "egg_info",
        "read": ["requirements.txt", "setup.cfg"],
    }
    engine = FakeEngine(answer(payload))
    watched = ("setup.py sha256:" + "a" * 64, "requirements.txt sha256:" + "b" * 64)
    result = setup_container.compute(
        engine,  # type: ignore[arg-type]
        "envd/base-debian:x",
        project(tmp_path),
        tmp_path / "scratch",
        project="proj",
        watched=watched,
    )
    meta = result.metadata
    assert (meta.name, meta.version, meta.requires) == ("my-pkg", "0.4.2", ("six>=1.16",))
    assert meta.backend == "setuptools.build_meta:__legacy__ (setuptools 66.1.1, egg_info)"
    assert meta.files == watched
    assert result.unwatched == ("setup.cfg",)  # read, but not hashed into the lock
    (call,) = engine.calls
    assert call["image"] == "envd/base-debian:x"
    assert call["network"] is False
    assert call["user"] == "65534:65534"
    assert call["timeout"] == setup_container.TIMEOUT_S
    # bounded inside the container: `timeout` is its first process, the output is cut
    assert call["argv"][:6] == ["timeout", "-k", "5", "120", "sh", "-c"]
    assert f"head -c {setup_container.MAX_OUTPUT_BYTES}" in call["argv"][6]
    assert call["labels"]["envd.project"] == "proj"
    (mount,) = call["mounts"]
    assert mount.read_only and mount.target == "/envd-project"
    # only the project's source files: no hidden files (.env, .git), nothing over the bound
    assert engine.seen == ["mypkg/__init__.py", "requirements.txt", "setup.py"]
    assert list((tmp_path / "scratch").iterdir()) == []  # the copy is removed


def test_a_marker_line_without_this_runs_nonce_is_not_taken(tmp_path: Path) -> None:
    def lines(nonce: str) -> list[str]:
        fake = {"metadata": "Name: evil\nVersion: 6.6.6", "read": []}
        return [f"ENVD-SETUP-METADATA 0000 {json.dumps(fake)}"]

    with pytest.raises(SetupMetadataFailed, match=r"no metadata in its first 4 MiB of output"):
        setup_container.compute(
            FakeEngine(lines),  # type: ignore[arg-type]
            "img",
            project(tmp_path),
            tmp_path / "s",
            project="proj",
            watched=(),
        )


def test_a_failing_setup_py_is_refused_with_its_output(tmp_path: Path) -> None:
    engine = FakeEngine(lambda nonce: ["Traceback", "FileNotFoundError: VERSION", "ENVD-EXIT 1"])
    with pytest.raises(SetupMetadataFailed, match="FileNotFoundError: VERSION") as info:
        setup_container.compute(
            engine,  # type: ignore[arg-type]
            "img",
            project(tmp_path),
            tmp_path / "s",
            project="proj",
            watched=(),
        )
    assert "exit 1" in info.value.message
    assert "egg_info" in (info.value.hint or "")


def test_a_timeout_is_said(tmp_path: Path) -> None:
    engine = FakeEngine(lambda nonce: ["running egg_info"], exit_code=124)
    with pytest.raises(SetupMetadataFailed, match="timed out"):
        setup_container.compute(
            engine,  # type: ignore[arg-type]
            "img",
            project(tmp_path),
            tmp_path / "s",
            project="proj",
            watched=(),
        )


def test_a_base_without_setuptools_is_refused_naming_the_fix(tmp_path: Path) -> None:
    engine = FakeEngine(lambda nonce: ["ENVD-NO-SETUPTOOLS"], exit_code=3)
    with pytest.raises(SetupMetadataFailed, match="no setuptools") as info:
        setup_container.compute(
            engine,  # type: ignore[arg-type]
            "img",
            project(tmp_path),
            tmp_path / "s",
            project="proj",
            watched=(),
        )
    assert "setup.cfg" in (info.value.hint or "")


def test_unsound_metadata_from_the_container_is_refused(tmp_path: Path) -> None:
    engine = FakeEngine(answer({"metadata": "Name: a\nRequires-Dist: ((", "read": []}))
    with pytest.raises(SetupMetadataFailed, match="cannot be read"):
        setup_container.compute(
            engine,  # type: ignore[arg-type]
            "img",
            project(tmp_path),
            tmp_path / "s",
            project="proj",
            watched=(),
        )
