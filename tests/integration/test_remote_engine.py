"""envd against a remote engine (DOCKER_HOST=tcp://...): one that cannot see this machine's
files (tests/integration/remote_engine.py), as a team's GPU server would be.

lock, build, fingerprint, share and pull work there; `envctl info` names that engine, and its
GPUs are that engine's (none: it has no GPU runtime), not this machine's.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.gateways.trust import host_ca_bundle
from tests.conftest import SESSION_LABEL, Envctl, _envctl_env, copy_template, stop_daemon
from tests.integration.conftest import remote_runner
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration


def remote_docker(host: str, *args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": host}
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, remote_docker_host: str) -> Iterator[Envctl]:
    """A daemon with its own home whose engine is the remote one."""
    root = tmp_path_factory.mktemp("remote")
    runner = remote_runner(root, remote_docker_host)
    yield runner
    runner("stop", "--all", timeout=60)
    stop_daemon(runner)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="module")
def remote_project(remote: Envctl, default_project: Path) -> Path:
    """The locally built default project's envd.yaml and envd.lock, built on the remote engine."""
    path = remote.cwd / "dflt"
    path.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (path / name).write_bytes((default_project / name).read_bytes())
    out = remote.ok("build", "--json", str(path))
    result = json.loads(out[out.index('{\n  "result"') :])["result"]
    assert result["image"]
    return path


def fingerprint(envctl: Envctl, path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(envctl.ok("fingerprint", "--json", str(path)))


def test_info_names_the_remote_engine_and_its_gpus(remote: Envctl, remote_docker_host: str) -> None:
    info = json.loads(remote.ok("info", "--json"))
    engine = info["engine"]
    assert engine["reachable"] is True
    assert engine["host"] == remote_docker_host
    assert engine["remote"] is True
    remote_id = json.loads(remote_docker(remote_docker_host, "info", "--format", "{{json .}}"))
    local_id = json.loads(
        remote_docker("unix:///var/run/docker.sock", "info", "--format", "{{json .}}")
    )
    assert engine["engine_id"] == remote_id["ID"] != local_id["ID"]
    assert engine["arch"] == remote_id["Architecture"]
    # The host is the engine's machine as that engine reports it.
    assert (info["arch"], info["kernel"], info["cpu_count"]) == (
        remote_id["Architecture"],
        remote_id["KernelVersion"],
        remote_id["NCPU"],
    )
    assert info["cpu_model"].startswith("unknown (a remote engine")
    # Its GPUs are the engine host's: it has no GPU runtime, so none, and the source is named.
    assert info.get("gpus", []) == []
    assert info["gpu_source"] == f"the engine at {remote_docker_host}"
    assert f"no GPU runtime on the engine at {remote_docker_host}" in info["gpu_error"]
    text = remote.ok("info")
    assert f"{remote_docker_host} (remote, DOCKER_HOST)" in text
    assert f"gpus from       the engine at {remote_docker_host}" in text


def test_lock_probes_the_remote_engine(remote: Envctl, remote_docker_host: str) -> None:
    path = copy_template("default", remote.cwd / "locked")
    remote.ok("lock", str(path))
    lock = json.loads((path / "envd.lock").read_text())
    assert lock["target"]["python_version"].startswith("3.11.")
    # The probe ran on the remote engine: its base image is there, not on the local one.
    assert remote_docker(remote_docker_host, "images", "-q", "--filter", f"label={SESSION_LABEL}")


def test_build_on_the_remote_engine_matches_the_local_build(
    remote: Envctl,
    remote_project: Path,
    default_project: Path,
    shared: Envctl,
    remote_docker_host: str,
) -> None:
    mine, theirs = fingerprint(shared, default_project), fingerprint(remote, remote_project)
    assert theirs["environment"]["content_hash"] == mine["environment"]["content_hash"]
    assert theirs["environment"]["python_packages"] == mine["environment"]["python_packages"]
    tag = next(
        p["image"]
        for p in json.loads(remote.ok("--json", "ls"))["projects"]
        if p["path"] == str(remote_project)
    )
    assert remote_docker(remote_docker_host, "image", "inspect", "-f", "{{.Id}}", tag).strip()
    local = subprocess.run(["docker", "image", "inspect", tag], capture_output=True)
    assert local.returncode != 0  # built there, not here
    # The copies of this machine's folders (uv, CA bundle, requirements) are gone again.
    volumes = remote_docker(
        remote_docker_host, "volume", "ls", "-q", "--filter", "label=envd.role=mount"
    )
    assert volumes.strip() == ""
    assert (
        remote_docker(
            remote_docker_host, "run", "--rm", tag, "python", "-c", "import numpy, yaml; print(1)"
        )
        == "1\n"
    )
    # A rebuild takes every step from the remote engine's cache.
    again = remote.ok("build", str(remote_project))
    assert "up to date" in again or "cached" in again


def test_share_and_pull_on_the_remote_engine(
    remote: Envctl, remote_project: Path, registry: str, remote_docker_host: str
) -> None:
    shared_out = json.loads(
        remote.ok("--json", "share", "image", str(remote_project), "--to", f"{registry}/team/r")
    )["result"]
    reference = shared_out["reference"]
    assert reference.startswith(f"{registry}/team/r@sha256:")
    assert shared_out["layers_pushed"] > 0
    remote_docker(remote_docker_host, "rmi", "-f", reference)
    out = remote.ok("pull", reference)
    assert "verified" in out
    assert remote_docker(remote_docker_host, "image", "inspect", "-f", "{{.Id}}", reference)


def _daemon_env(home: Path, config: Path, **more: str) -> dict[str, str]:
    env = _envctl_env(home)
    env.pop("DOCKER_HOST", None)
    env.pop("DOCKER_CONTEXT", None)
    env.update(DOCKER_CONFIG=str(config), **more)
    return env


def test_the_current_docker_context_names_the_engine(
    tmp_path: Path, remote_docker_host: str
) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    cli_env = {**os.environ, "DOCKER_CONFIG": str(config)}
    cli_env.pop("DOCKER_HOST", None)
    for argv in (
        ["context", "create", "gpu-server", "--docker", f"host={remote_docker_host}"],
        ["context", "use", "gpu-server"],
    ):
        done = subprocess.run(["docker", *argv], env=cli_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    home = tmp_path / "home"
    home.mkdir()
    runner = Envctl(env=_daemon_env(home, config), home=home, cwd=tmp_path)
    try:
        engine = json.loads(runner.ok("info", "--json"))["engine"]
        assert (engine["host"], engine["context"], engine["remote"]) == (
            remote_docker_host,
            "gpu-server",
            True,
        )
        assert engine["reachable"] is True
        assert f"{remote_docker_host} (remote, context gpu-server)" in runner.ok("info")
    finally:
        stop_daemon(runner)


def test_an_unknown_context_is_an_engine_error(tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    config.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = _daemon_env(home, config, DOCKER_CONTEXT="nowhere")
    runner = Envctl(env=env, home=home, cwd=tmp_path)
    try:
        path = copy_template("default", tmp_path / "p")
        proc = runner("lock", str(path))
        assert proc.returncode == 12, proc.stderr  # the engine errors' exit code
        assert "Docker context 'nowhere'" in proc.stderr
        assert "docker context ls" in proc.stderr
        assert not (path / "envd.lock").exists()  # nothing half-written
        engine = json.loads(runner.ok("info", "--json"))["engine"]
        assert engine["reachable"] is False and engine["context"] == "nowhere"
    finally:
        stop_daemon(runner)


def test_the_ca_bundle_copied_there_is_in_no_layer(
    remote: Envctl, remote_project: Path, remote_docker_host: str, tmp_path: Path
) -> None:
    bundle = host_ca_bundle()
    assert bundle
    tag = next(
        p["image"]
        for p in json.loads(remote.ok("--json", "ls"))["projects"]
        if p["path"] == str(remote_project)
    )
    archive = tmp_path / "image.tar"
    remote_docker(remote_docker_host, "save", "-o", str(archive), tag)
    packaged = remote_docker(
        remote_docker_host, "run", "--rm", tag, "cat", "/etc/ssl/certs/ca-certificates.crt"
    )
    extra = [c for c in _pem_blocks(Path(bundle).read_text()) if c not in _pem_blocks(packaged)]
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.name.endswith("layer.tar"):
                continue
            with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                names = layer.getnames()
                assert not any(n.startswith(("mnt/", "envd-fill")) for n in names), names
                for inner in layer.getmembers():
                    if inner.isfile() and inner.size < 5_000_000:
                        data = layer.extractfile(inner).read().decode("latin-1")  # type: ignore[union-attr]
                        for cert in extra:
                            assert cert not in data, inner.name


def _pem_blocks(text: str) -> list[str]:
    parts = text.split("-----BEGIN CERTIFICATE-----")[1:]
    return [p.split("-----END CERTIFICATE-----")[0].strip() for p in parts]
