"""envctl export pylock|sbom|devcontainer, and `requirements:` hashes kept, on the real daemon.

The pylock is installed by the real uv for the lock's own target; the SBOMs are validated with
cyclonedx-python-lib and spdx-tools on a real built image (environments/default).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packaging.utils import canonicalize_name
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from envd.gateways.index import IndexPages
from envd.gateways.trust import host_ca_bundle
from envd.model.pylock import PYPI_SIMPLE
from tests.conftest import Envctl

pytestmark = pytest.mark.integration

SIX = "1.16.0"


def lock_data(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "envd.lock").read_text())


def six_wheel_sha256() -> str:
    (wheel,) = [
        f
        for f in IndexPages().files(PYPI_SIMPLE, "six")
        if f.filename == f"six-{SIX}-py2.py3-none-any.whl"
    ]
    return wheel.sha256


@pytest.fixture(scope="module")
def tiny(shared: Envctl) -> Path:
    """A project of tiny packages whose requirements file pins six by one hash."""
    path = shared.cwd / "tiny"
    (path / "reqs").mkdir(parents=True)
    (path / "envd.yaml").write_text(
        "base: {debian: bookworm}\npackages: [idna<4]\nrequirements: requirements.txt\n"
    )
    (path / "requirements.txt").write_text("-r reqs/pins.txt\n")
    (path / "reqs" / "pins.txt").write_text(
        f"# one artifact only\nsix=={SIX} \\\n    --hash=sha256:{six_wheel_sha256()}\n"
    )
    shared.ok("lock", str(path))
    return path


def test_the_lock_keeps_the_requirements_files_pin_and_hash(tiny: Path) -> None:
    python = {p["name"]: p for p in lock_data(tiny)["python"]}
    assert set(python) == {"six", "idna"}
    assert python["six"]["version"] == SIX
    assert python["six"]["hashes"] == [f"sha256:{six_wheel_sha256()}"]
    assert len(python["idna"]["hashes"]) >= 2  # not pinned by a file: every artifact


def test_a_hash_the_index_does_not_have_is_refused_at_its_file_and_line(
    shared: Envctl, tmp_path: Path
) -> None:
    path = tmp_path / "badhash"
    path.mkdir()
    (path / "envd.yaml").write_text("base: {debian: bookworm}\nrequirements: r.txt\n")
    (path / "r.txt").write_text(f"idna<4\nsix=={SIX} --hash=sha256:{'0' * 64}\n")
    proc = shared("lock", str(path))
    assert proc.returncode == 1, proc.stderr
    assert f"{path / 'r.txt'}:2: six=={SIX}" in proc.stderr
    assert not (path / "envd.lock").exists()


UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"


def uv_env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env["UV_CACHE_DIR"] = str(cache)  # a fresh cache: real downloads, checked
    if bundle := host_ca_bundle():
        env["SSL_CERT_FILE"] = bundle
    return env


def interpreter(version: str) -> str:
    """A Python of exactly the lock's version (pylock's requires-python is `==` it)."""
    for candidate in (sys.executable, "/usr/bin/python3", f"/usr/bin/python{version[:4]}"):
        try:
            out = subprocess.run(
                [candidate, "-c", "import platform; print(platform.python_version())"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except OSError:
            continue
        if out == version:
            return candidate
    pytest.skip(f"no Python {version} on this host to install the pylock into")


def uv_install(pylock: Path, venv: Path, python: str, cache: Path) -> str:
    """A fresh venv and `uv pip install -r pylock.toml` into it; uv's error, "" on success."""
    env = uv_env(cache)
    subprocess.run(
        [UV, "venv", "--no-config", "--python", python, str(venv)],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    argv = [UV, "pip", "install", "--no-config", "--python", str(venv), "-r", str(pylock)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    return "" if proc.returncode == 0 else proc.stderr or "failed"


def test_exported_pylock_installs_the_locked_versions_with_uv(
    shared: Envctl, tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pylock.toml"
    proc = shared("export", "pylock", str(tiny), "--output", str(out), check=True)
    assert f"wrote {out} (2 packages from {tiny / 'envd.lock'})" in proc.stderr
    text = out.read_text()
    assert text.startswith('lock-version = "1.0"')
    assert six_wheel_sha256() in text
    assert shared.ok("export", "pylock", str(tiny)) == text  # printed: the same bytes
    lock = lock_data(tiny)
    python = interpreter(lock["target"]["python_version"])
    venv = tmp_path / "venv"
    assert uv_install(out, venv, python, tmp_path / "cache") == ""
    freeze = subprocess.run(
        [UV, "pip", "freeze", "--no-config", "--python", str(venv)],
        env=uv_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    installed = dict(line.split("==", 1) for line in freeze)
    assert installed == {p["name"]: p["version"] for p in lock["python"]}
    # the hashes are enforced: a pylock whose hash is not the artifact's is refused by uv
    bad = tmp_path / "bad" / "pylock.toml"
    bad.parent.mkdir()
    bad.write_text(text.replace(six_wheel_sha256(), "0" * 64))
    error = uv_install(bad, tmp_path / "venv2", python, tmp_path / "cache2")
    assert "hash" in error.lower(), error


def test_sboms_of_a_built_image_validate(
    shared: Envctl, default_project: Path, tmp_path: Path
) -> None:
    cyclonedx = tmp_path / "bom.cdx.json"
    shared.ok("export", "sbom", str(default_project), "--output", str(cyclonedx))
    text = cyclonedx.read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    assert errors is None, [str(e) for e in errors]  # type: ignore[union-attr]
    bom = json.loads(text)
    purls = {c.get("purl", "") for c in bom["components"]}
    lock = lock_data(default_project)
    for package in lock["python"]:
        assert f"pkg:pypi/{package['name']}@{package['version']}" in purls
    assert any(p.startswith("pkg:deb/debian/libc6@") for p in purls)
    fingerprint = json.loads(shared.ok("--json", "fingerprint", str(default_project)))
    reply = json.loads(shared.ok("--json", "export", "sbom", str(default_project)))
    assert reply["environment_hash"] == fingerprint["environment_hash"]
    assert reply["format"] == "SBOM_FORMAT_CYCLONEDX"
    assert reply["components"] == len(bom["components"])

    spdx = tmp_path / "sbom.spdx.json"
    shared.ok("export", "sbom", str(default_project), "--format", "spdx", "-o", str(spdx))
    document = parse_file(str(spdx))
    messages = validate_full_spdx_document(document)
    assert messages == [], [m.validation_message for m in messages]
    names = {p.name for p in document.packages}
    assert {"numpy", "pyyaml", "libc6"} <= {canonicalize_name(n) for n in names}


def test_devcontainer_opens_the_built_image(
    shared: Envctl, default_project: Path, tmp_path: Path
) -> None:
    proc = shared("export", "devcontainer", str(default_project), check=True)
    path = default_project / ".devcontainer" / "devcontainer.json"
    assert f"wrote {path}" in proc.stderr
    config = json.loads(path.read_text())
    images = json.loads(shared.ok("--json", "images"))["images"]
    ours = [i for i in images if i.get("project") == "dflt" and i.get("kind") == "project"]
    assert config["image"] in {i["image"] for i in ours}, (config, ours)
    assert config["name"] == "dflt"
    assert config["workspaceFolder"] == "/workspace"
    assert config["workspaceMount"].endswith("target=/workspace,type=bind")
    assert config["containerEnv"] == {"PYTHONHASHSEED": "0"}
    assert config["remoteUser"] == "root"
    # again: the same file; a changed one is kept unless --force
    shared.ok("export", "devcontainer", str(default_project))
    path.write_text("{}\n")
    proc = shared("export", "devcontainer", str(default_project))
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert path.read_text() == "{}\n"
    shared.ok("export", "devcontainer", str(default_project), "--force")
    assert json.loads(path.read_text()) == config
    other = tmp_path / "elsewhere.json"
    shared.ok("export", "devcontainer", str(default_project), "--output", str(other))
    assert json.loads(other.read_text()) == config
    printed = shared.ok("export", "devcontainer", str(default_project), "--output", "-")
    assert json.loads(printed) == config
