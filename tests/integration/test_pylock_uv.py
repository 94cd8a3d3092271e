"""A pylock.toml rendered from a real lock installs with the real uv to the locked versions."""

from __future__ import annotations

import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from envd.gateways import uv
from envd.gateways.trust import host_ca_bundle
from envd.model import lockfile
from envd.model.lockfile import BaseLock, Inputs, LockFile, Target
from envd.model.pylock import ArtifactFile, files_from_simple_json, render_pylock

pytestmark = pytest.mark.integration

REQUIREMENTS = ["six", "idna<4"]
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def _uv_bin() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed")
    return found


def _env(cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env["UV_CACHE_DIR"] = str(cache_dir)
    if bundle := host_ca_bundle():
        env["SSL_CERT_FILE"] = bundle
    return env


def _index_files(name: str) -> tuple[ArtifactFile, ...]:
    """The project's files from PyPI's PEP 691 JSON page, trusting the host's CA bundle."""
    url = f"{uv.PYPI_SIMPLE}/{name}/"
    context = ssl.create_default_context(cafile=host_ca_bundle())
    request = urllib.request.Request(url, headers={"Accept": SIMPLE_JSON})
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        return files_from_simple_json(json.load(response), response.geturl())


def _lock(python_version: str, arch: str, cache_dir: Path) -> LockFile:
    target = Target(python_version, f"manylinux_2_36_{arch}", "2.36", arch)
    packages = uv.resolve(
        REQUIREMENTS,
        python_version=python_version,
        platform=target.platform,
        indexes=(),
        cache_dir=str(cache_dir),
    )
    inputs = Inputs("image:python:3.11-slim", "", (), tuple(REQUIREMENTS), (), "", (), ())
    return LockFile(
        envd_version="test",
        uv_version=uv.uv_version(),
        inputs=inputs,
        inputs_hash=lockfile.hash_inputs(inputs),
        target=target,
        base=BaseLock(kind="image", reference="python:3.11-slim"),
        system=(),
        python=packages,
    )


CACHE_DIR = Path(os.environ.get("ENVD_CACHE", "/tmp/envd-test-cache")) / "uv"
QUIET = ["--no-config", "--color", "never"]


@pytest.fixture
def arch() -> str:
    machine = platform.machine()
    if machine not in {"x86_64", "aarch64"}:
        pytest.skip(f"no manylinux target for {machine}")
    return machine


def _pylock_text(lock: LockFile) -> str:
    return render_pylock(lock, [f for p in lock.python for f in _index_files(p.name)])


def _install(pylock_text: str, tmp_path: Path, cache_dir: Path) -> tuple[Path, str, dict[str, str]]:
    """A fresh venv for this Python and `uv pip install -r pylock.toml` into it."""
    pylock = tmp_path / "pylock.toml"
    pylock.write_text(pylock_text, encoding="utf-8")
    uv_bin, env, venv = _uv_bin(), _env(cache_dir), tmp_path / "venv"
    subprocess.run(
        [uv_bin, "venv", *QUIET, "--python", sys.executable, str(venv)],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result = subprocess.run(
        [uv_bin, "pip", "install", *QUIET, "--python", str(venv), "-r", str(pylock)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        return venv, result.stderr, env
    return venv, "", env


def test_uv_installs_a_rendered_pylock_to_the_locked_versions(tmp_path: Path, arch: str) -> None:
    lock = _lock(platform.python_version(), arch, CACHE_DIR)
    assert {p.name for p in lock.python} == {"six", "idna"}
    venv, error, env = _install(_pylock_text(lock), tmp_path, CACHE_DIR)
    assert error == ""
    freeze = subprocess.run(
        [_uv_bin(), "pip", "freeze", *QUIET, "--python", str(venv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    installed = dict(line.split("==", 1) for line in freeze.stdout.split())
    assert installed == {p.name: p.version for p in lock.python}


def test_uv_refuses_a_pylock_for_another_python(tmp_path: Path, arch: str) -> None:
    """requires-python is the lock's exact Python: uv must not install it elsewhere."""
    lock = _lock("3.10.1", arch, CACHE_DIR)
    _, error, _ = _install(_pylock_text(lock), tmp_path, CACHE_DIR)
    assert "3.10.1" in error


def test_uv_rejects_files_that_do_not_match_the_locked_sha256(tmp_path: Path, arch: str) -> None:
    """The hashes in the pylock are enforced: a wrong one makes the install fail."""
    lock = _lock(platform.python_version(), arch, CACHE_DIR)
    text = _pylock_text(lock)
    six = next(p for p in lock.python if p.name == "six")
    for digest in six.hashes:
        assert digest.removeprefix("sha256:") in text
        text = text.replace(digest.removeprefix("sha256:"), "0" * 64)
    _, error, _ = _install(text, tmp_path, tmp_path / "cache")  # a fresh cache: a real download
    assert "hash" in error.lower(), error
