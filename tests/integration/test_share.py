"""Sharing through a real local registry and through archives."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, copy_template, stop_daemon
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def colleague(tmp_path: Path) -> Iterator[Envctl]:
    """A second user: own daemon, own state, own checkout."""
    home = tmp_path / "home2"
    home.mkdir()
    runner = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    yield runner
    runner("stop", "--all")
    stop_daemon(runner)


def share(envctl: Envctl, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(envctl.ok("--json", "share", "image", *args))["result"]


def test_share_pull_enter_same_fingerprint(
    shared: Envctl, default_project: Path, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    result = share(shared, str(default_project), "--to", f"{registry}/team/dflt")
    reference = result["reference"]
    assert reference.startswith(f"{registry}/team/dflt@sha256:")
    assert result["layers_pushed"] > 0
    again = share(shared, str(default_project), "--to", f"{registry}/team/dflt")
    assert again["layers_pushed"] == 0 and again["digest"] == result["digest"]

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (checkout / name).write_bytes((default_project / name).read_bytes())
    colleague.ok("add", str(checkout))
    subprocess.run(["docker", "rmi", "-f", reference], capture_output=True)
    out = colleague.ok("pull", reference)
    assert "verified" in out and "registered for project dflt" in out
    build = colleague.ok("build", str(checkout))
    assert "up to date" in build  # entering needs no build
    assert colleague.ok("enter", str(checkout), "--", "python", "-c", "print(1)") == "1\n"
    mine = tmp_path / "mine.json"
    shared.ok("fingerprint", str(default_project), "--output", str(mine))
    diff = colleague("diff", str(checkout), str(mine))
    assert diff.returncode == 0 or "environment: identical" in diff.stdout, diff.stdout


def test_pinned_lock_enters_without_building(
    shared: Envctl, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    path = copy_template("default", shared.cwd / "pinned")
    shared.ok("build", str(path))
    result = share(shared, str(path), "--to", f"{registry}/team/pinned", "--pin")
    assert json.loads((path / "envd.lock").read_text())["shared_image"] == result["reference"]
    checkout = tmp_path / "pinned"
    checkout.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (checkout / name).write_bytes((path / name).read_bytes())
    proc = colleague("enter", str(checkout), "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert "pulling" in proc.stderr and "running: " not in proc.stderr


def test_archive_round_trip_and_corruption(
    shared: Envctl, default_project: Path, colleague: Envctl, tmp_path: Path
) -> None:
    archive = tmp_path / "dflt.tar.gz"
    out = shared.ok("share", "image", str(default_project), "--output", str(archive))
    assert str(archive) in out and archive.stat().st_size > 1_000_000
    assert "verified" in colleague.ok("load", str(archive))
    broken = tmp_path / "broken.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    proc = colleague("load", str(broken))
    assert proc.returncode in (8, 9), proc.stderr
    assert "Traceback" not in proc.stderr
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 3])
    proc = colleague("load", str(truncated))
    assert proc.returncode == 8 and "corrupt or truncated" in proc.stderr


def test_tampered_image_is_refused(
    shared: Envctl, default_project: Path, registry: str, colleague: Envctl, tmp_path: Path
) -> None:
    tag = json.loads(shared.ok("--json", "ls"))["projects"]
    image = next(p["image"] for p in tag if p["path"] == str(default_project))
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "Dockerfile").write_text(
        f"FROM {image}\nRUN /opt/venv/bin/python -m pip uninstall -y -q pyyaml\n"
        "LABEL envd.test.evil=1\n"
    )
    target = f"{registry}/team/evil:1"
    subprocess.run(
        ["docker", "build", "-q", "-t", target, str(evil)],
        check=True,
        capture_output=True,
        env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
    )
    subprocess.run(["docker", "push", target], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", "-f", target], capture_output=True)
    proc = colleague("pull", target)
    assert proc.returncode == 9, proc.stderr
    assert "do not match its fingerprint label" in proc.stderr
    gone = subprocess.run(["docker", "image", "inspect", target], capture_output=True)
    assert gone.returncode != 0


def test_unreachable_registry_is_a_clear_error(shared: Envctl, default_project: Path) -> None:
    from tests.integration.registry import free_port

    proc = shared("share", "image", str(default_project), "--to", f"127.0.0.1:{free_port()}/team/x")
    assert proc.returncode == 8
    assert "Traceback" not in proc.stderr
    proc = shared("pull", f"127.0.0.1:{free_port()}/team/x:1")
    assert proc.returncode == 8 and "cannot be pulled" in proc.stderr


def test_resharing_an_unchanged_image_moves_nothing_and_a_new_tag_only_its_manifest(
    shared: Envctl, default_project: Path, registry: str
) -> None:
    import urllib.request

    first = share(shared, str(default_project), "--to", f"{registry}/team/again:v1")
    again = share(shared, str(default_project), "--to", f"{registry}/team/again:v1")
    assert again["layers_pushed"] == 0 and again["layers_skipped"] > 0
    assert again["digest"] == first["digest"]
    other = share(shared, str(default_project), "--to", f"{registry}/team/again:v2")
    assert other["layers_pushed"] == 0 and other["digest"] == first["digest"]
    request = urllib.request.Request(
        f"http://{registry}/v2/team/again/manifests/v2",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        assert response.headers["Docker-Content-Digest"] == first["digest"]


def test_a_plain_reshare_is_answered_on_the_enter_socket_without_grpc(
    shared: Envctl, default_project: Path, registry: str, tmp_path: Path
) -> None:
    """`envctl share image P --to REF` with nothing to push is answered by the daemon's enter
    socket (envd/model/sharecheck.py): the same lines as the gRPC path, from an envctl that
    could not import grpc at all; one that must push still goes through gRPC."""
    target = f"{registry}/team/fast"
    first = share(shared, str(default_project), "--to", f"{target}:v1")  # gRPC: pushes
    by_grpc = shared("share", "image", str(default_project), "--to", f"{target}:v1")
    shadow = tmp_path / "no-grpc" / "grpc"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('envctl imported grpc')\n")
    env = dict(shared.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow.parent), env.get("PYTHONPATH")]))
    no_grpc = Envctl(env=env, home=shared.home, cwd=shared.cwd)
    fast = no_grpc("share", "image", str(default_project), "--to", f"{target}:v1")
    assert fast.returncode == 0, fast.stderr
    assert (fast.stdout, fast.stderr) == (by_grpc.stdout, by_grpc.stderr)
    assert fast.stdout == f"{target}@{first['digest']}\n"
    assert "layers: 0 pushed, " in fast.stderr and "nothing to push" in fast.stderr
    retag = no_grpc("share", "image", str(default_project), "--to=" + f"{target}:v2")
    assert retag.returncode == 0 and retag.stdout == fast.stdout, retag.stderr  # the manifest
    elsewhere = no_grpc("share", "image", str(default_project), "--to", f"{registry}/team/new:1")
    assert elsewhere.returncode != 0 and "envctl imported grpc" in elsewhere.stderr  # a push
