"""`envctl init` on an existing project, through the real daemon: adopted, noted, kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from envd.gateways.trust import host_ca_bundle
from tests.conftest import Envctl

pytestmark = pytest.mark.integration


def test_init_adopts_an_existing_project_and_says_from_where(
    shared: Envctl, tmp_path: Path
) -> None:
    project = tmp_path / "churn"
    (project / "requirements").mkdir(parents=True)
    (project / "requirements.txt").write_text("-r requirements/base.txt\nidna>=3\n")
    (project / "requirements" / "base.txt").write_text("six==1.16.0\n")
    (project / ".python-version").write_text("3.11\n")
    out = shared.ok("init", str(project))
    assert f"wrote {project}/envd.yaml from " in out
    assert "requirements.txt" in out and "requirements/base.txt" in out
    assert "took python 3.11 from .python-version" in out
    assert "registered project `churn`" in out
    document = yaml.safe_load((project / "envd.yaml").read_text())
    assert document["requirements"] == "requirements.txt"
    assert document["base"] == {"debian": "bookworm"}
    assert shared.ok("validate", str(project))
    proc = shared("init", str(project))
    assert proc.returncode == 1 and "never overwrites" in proc.stderr


def test_init_with_a_template_merges_and_reports_as_json(shared: Envctl, tmp_path: Path) -> None:
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1"\ndependencies = ["six"]\n'
    )
    reply = json.loads(shared.ok("--json", "init", "--template", "sklearn", str(project)))
    assert reply["adopted"] is True and reply["template"] == "sklearn"
    assert reply["project"]["name"] == "app"
    assert "pyproject.toml" in reply["files"]
    assert reply["notes"]
    document = yaml.safe_load((project / "envd.yaml").read_text())
    assert any("scikit-learn" in p for p in document["packages"])
    assert "six" in document["packages"]


def test_init_in_an_empty_directory_writes_the_default_template(
    shared: Envctl, tmp_path: Path
) -> None:
    project = tmp_path / "fresh"
    out = shared.ok("init", str(project))
    assert "from template `default`" in out
    assert (project / "envd.yaml").is_file()


def test_a_project_with_a_real_uv_lock_is_adopted_and_locked_to_its_pins(
    shared: Envctl, tmp_path: Path
) -> None:
    project = tmp_path / "uvproj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "uvproj"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["six==1.16.0", "colorama; sys_platform == \'win32\'", "idna<4"]\n'
    )
    uv_bin = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    if bundle := host_ca_bundle():
        env["SSL_CERT_FILE"] = bundle
    subprocess.run(
        [uv_bin, "lock", "--no-config", "--directory", str(project)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    uv_lock = tomllib.loads((project / "uv.lock").read_text())
    pinned = {
        p["name"]: (p["version"], {w["hash"] for w in p.get("wheels", [])} | {p["sdist"]["hash"]})
        for p in uv_lock["package"]
        if "registry" in p["source"]
    }
    assert {"six", "idna", "colorama"} <= set(pinned)  # uv.lock is for every platform
    out = shared.ok("init", str(project))
    assert "uv.lock" in out
    document = yaml.safe_load((project / "envd.yaml").read_text())
    assert document["requirements"] == "uv.lock"
    shared.ok("lock", str(project))
    locked = {
        p["name"]: (p["version"], set(p["hashes"]))
        for p in json.loads((project / "envd.lock").read_text())["python"]
    }
    assert set(locked) == {"six", "idna"}  # colorama is for Windows only: not on this target
    for name, (version, hashes) in locked.items():
        assert (version, hashes) == pinned[name], name
