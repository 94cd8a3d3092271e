"""envctl build on the real engine: caching, failure, concurrency, CA trust, gc."""

from __future__ import annotations

import json
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.gateways.engine import Engine
from envd.gateways.trust import host_ca_bundle
from envd.services.content import ContentHasher
from tests.conftest import SESSION_LABEL, Envctl, copy_template
from tests.integration.events import EventStream

pytestmark = pytest.mark.integration


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def build_json(envctl: Envctl, path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    out = envctl.ok("build", "--json", *extra, str(path))
    return json.loads(out[out.index('{\n  "result"') :])["result"]


def layers(image: str) -> list[str]:
    return json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", image))


def test_noop_rebuild_runs_nothing(shared: Envctl, default_project: Path) -> None:
    result = build_json(shared, default_project)
    assert result["cached"] is True
    assert all(step["cached"] for step in result["steps"])
    labels = json.loads(
        docker("image", "inspect", "-f", "{{json .Config.Labels}}", result["image"])
    )
    assert labels["envd.lock-hash"].startswith("sha256:")
    assert labels["envd.fingerprint.environment"].startswith("sha256:")


def test_adding_a_package_reuses_base_and_venv(shared: Envctl, tmp_path: Path) -> None:
    path = copy_template("default", shared.cwd / "grow")
    old = build_json(shared, path)
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - six"))
    shared.ok("lock", str(path))
    plan = {s["name"]: s["cached"] for s in build_json(shared, path, "--dry-run")["steps"]}
    assert plan == {"base": True, "venv": True, "packages": False, "metadata": False}
    new = build_json(shared, path)
    ran = [s["name"] for s in new["steps"] if not s["cached"]]
    assert ran == ["packages", "metadata"]
    old_layers, new_layers = layers(old["image"]), layers(new["image"])
    assert new_layers[:2] == old_layers[:2]  # base and venv layers are the same layers
    assert new_layers[2] != old_layers[2]
    # The new layer was summarised from what its step changed, as it was committed: the
    # content hash the build recorded is the one the image's bytes give, read afresh.
    recorded = json.loads(shared.ok("--json", "fingerprint", str(path)))
    from_bytes = ContentHasher(Engine(), tmp_path / "layers").content_hash(new["image"])
    assert recorded["environment"]["content_hash"] == from_bytes


def test_failing_setup_names_the_step_and_keeps_the_old_image(shared: Envctl) -> None:
    with shared.no_background_builds():  # no background rebuild races the checks
        _failing_setup(shared)


def _failing_setup(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "failing")
    good = build_json(shared, path)["image"]
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "setup: ['echo about to fail; exit 3']\n")
    with EventStream(shared) as events:
        shared.ok("lock", str(path))
        # the watcher has judged the new lock before the build fails
        events.wait(
            "project.stale",
            lambda e: e["project"] == "failing" and "older than envd.lock" in e["message"],
        )
    proc = shared("build", str(path))
    assert proc.returncode == 6
    assert "setup[0]" in proc.stderr and "about to fail" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert docker("image", "inspect", "-f", "{{.Id}}", good).strip()
    ls = json.loads(shared.ok("--json", "ls"))["projects"]
    project = next(p for p in ls if p["path"] == str(path))
    assert project["image"] == good and project["state"] == "PROJECT_STATE_FAILED"
    left = docker(  # this project's: a background build of another project may be running
        "ps",
        "-aq",
        "--filter",
        "label=envd.role=step",
        "--filter",
        "label=envd.project=failing",
        "--filter",
        f"label={SESSION_LABEL}",
    )
    assert left.strip() == ""


def test_concurrent_builds_share_one_build(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "twice")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - idna"))
    shared.ok("lock", str(path))
    outputs: list[str] = []

    def build() -> None:
        outputs.append(shared("build", str(path)).stderr)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = sum("running: 3 Python packages" in out for out in outputs)
    assert ran == 1, outputs


def test_ca_bundle_is_in_no_layer(shared: Envctl, default_project: Path, tmp_path: Path) -> None:
    bundle = host_ca_bundle()
    assert bundle
    image = json.loads(shared.ok("--json", "ls"))["projects"]
    tag = next(p["image"] for p in image if p["path"] == str(default_project))
    archive = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), tag], check=True)
    host_certs = _pem_blocks(Path(bundle).read_text())
    packaged = _pem_blocks(docker("run", "--rm", tag, "cat", "/etc/ssl/certs/ca-certificates.crt"))
    extra = [c for c in host_certs if c not in packaged]  # e.g. the proxy's own CA
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.name.endswith("layer.tar"):
                continue
            with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                names = layer.getnames()
                assert not any(n.startswith(("mnt/", "tmp/")) for n in names), names
                for inner in layer.getmembers():
                    if inner.isfile() and inner.size < 5_000_000:
                        data = layer.extractfile(inner).read().decode("latin-1")  # type: ignore[union-attr]
                        for cert in extra:
                            assert cert not in data, inner.name


def _pem_blocks(text: str) -> list[str]:
    parts = text.split("-----BEGIN CERTIFICATE-----")[1:]
    return [p.split("-----END CERTIFICATE-----")[0].strip() for p in parts]


def test_gc_keeps_what_a_current_lock_needs(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "gc")
    first = build_json(shared, path)["image"]
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - certifi"))
    shared.ok("lock", str(path))
    second = build_json(shared, path)["image"]
    removed = json.loads(shared.ok("--json", "gc"))["removed"]
    names = {r["image"] for r in removed}
    assert first in names and second not in names
    assert docker("image", "inspect", "-f", "{{.Id}}", second).strip()
    assert "up to date" in shared.ok("build", str(path))


def test_export_dockerfile(shared: Envctl, default_project: Path, tmp_path: Path) -> None:
    out = shared.ok("export", "dockerfile", str(default_project), "--output", str(tmp_path / "x"))
    assert "wrote" in out
    text = (tmp_path / "x" / "Dockerfile").read_text()
    assert text.count("FROM ") == 1 and "--require-hashes" in text
    assert "--hash=sha256:" in (tmp_path / "x" / "requirements.lock.txt").read_text()


def test_a_daemon_killed_mid_build_leaves_no_containers(shared: Envctl) -> None:
    import os
    import signal
    import sys

    path = copy_template("default", shared.cwd / "killed")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "setup: ['sleep 60']\n")
    shared.ok("lock", str(path))
    build = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "build", str(path)],
        env=shared.env,
        cwd=shared.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    step = ["ps", "-q", "--filter", "label=envd.role=step", "--filter", f"label={SESSION_LABEL}"]
    deadline = time.monotonic() + 120
    while not docker(*step).strip():
        assert time.monotonic() < deadline, "no step container appeared"
        time.sleep(0.2)
    os.kill(int((shared.home / "envd.pid").read_text()), signal.SIGKILL)
    build.wait(timeout=30)
    shared.ok("daemon", "status")  # a fresh daemon starts and cleans up after the old one
    assert docker(*step).strip() == ""


@pytest.fixture
def no_background_builds(shared: Envctl) -> Iterator[None]:
    """The watcher rebuilds a project whose image went missing: not while a test removes one."""
    with shared.no_background_builds():
        yield


def test_images_rm_and_images_removed_behind_envds_back(
    shared: Envctl, no_background_builds: None
) -> None:
    path = copy_template("default", shared.cwd / "rmme")
    tag = build_json(shared, path)["image"]
    listed = {i["image"]: i for i in json.loads(shared.ok("--json", "images"))["images"]}
    assert listed[tag]["in_use"] and listed[tag]["kind"] == "project"
    steps = [i for i in listed.values() if i["kind"].startswith("step:")]
    assert {"step:venv", "step:packages", "step:metadata"} <= {i["kind"] for i in steps}

    assert tag in json.loads(shared.ok("--json", "rm", "--image", tag))["removed"]
    assert subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode
    assert tag not in {i["image"] for i in json.loads(shared.ok("--json", "images"))["images"]}

    again = build_json(shared, path)  # every step is still cached: only the tag comes back
    assert again["image"] == tag and all(s["cached"] for s in again["steps"])
    docker("rmi", tag)  # behind envd's back
    assert tag not in {i["image"] for i in json.loads(shared.ok("--json", "images"))["images"]}
    assert build_json(shared, path)["image"] == tag
    docker("image", "inspect", tag)


def test_exported_dockerfile_builds_the_same_environment(shared: Envctl, tmp_path: Path) -> None:
    """The export, built by the legacy builder, gives envd's environment (config and files)."""
    path = copy_template("default", shared.cwd / "exported")
    (path / "envd.yaml").write_text(
        "version: 1\nbase:\n  debian: bookworm\npython: '3.11'\npackages: [six]\n"
        "env: {GREETING: 'it''s $HOME \"quoted\"'}\n"
        'setup: [\'echo "$GREETING" > /opt/marker && six_v=$(python -c "import six; '
        'print(six.__version__)") && echo "six $six_v" >> /opt/marker\']\n'
    )
    envd_tag = build_json(shared, path)["image"]
    out = tmp_path / "ctx"
    shared.ok("export", "dockerfile", str(path), "--output", str(out))
    # Test-only: this machine reaches PyPI through a TLS-intercepting proxy, so the test image
    # (never the export) gets the host CA for pip at build time.
    bundle = host_ca_bundle()
    assert bundle
    (out / "ca.pem").write_bytes(Path(bundle).read_bytes())
    lines = (out / "Dockerfile").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("FROM ")) + 1
    lines[at:at] = ["COPY ca.pem /tmp/test-ca.pem", "ARG PIP_CERT=/tmp/test-ca.pem"]
    (out / "Dockerfile").write_text("\n".join(lines) + "\n")
    exported = "envd-test/exported:1"
    subprocess.run(
        ["docker", "build", "-q", "--force-rm", "--label", SESSION_LABEL, "-t", exported, str(out)],
        env={**shared.env, "DOCKER_BUILDKIT": "0"},
        check=True,
        capture_output=True,
    )

    def config(image: str) -> dict:  # type: ignore[type-arg]
        return json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image))

    ours, theirs = config(envd_tag), config(exported)
    assert sorted(theirs["Env"]) == sorted(ours["Env"])
    assert theirs["WorkingDir"] == ours["WorkingDir"] == "/workspace"
    assert theirs["Cmd"] == ours["Cmd"]
    for key in ("envd.project", "envd.lock-hash", "envd.base-digest", "envd.python"):
        assert theirs["Labels"][key] == ours["Labels"][key]
    marker = [docker("run", "--rm", image, "cat", "/opt/marker") for image in (envd_tag, exported)]
    assert marker[0] == marker[1], marker
    assert marker[0].startswith('it\'s $HOME "quoted"\nsix 1.'), marker


def test_registry_style_base_installs_system_packages_once(
    shared: Envctl, default_project: Path
) -> None:
    """An image base gets a system step; its .debs land in the shared apt volume (even with
    Docker Hub's docker-clean hook), never in the image; a package change keeps that step."""
    base = json.loads((default_project / "envd.lock").read_text())["base"]["reference"]
    hub_like = "envd-test/debian-like:1"
    hook = (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };'
    )
    name = f"envd-test-hub-{SESSION_LABEL[-12:]}"
    docker(
        "run", "--name", name, "--label", SESSION_LABEL, base,
        "sh", "-c", f"echo '{hook}' > /etc/apt/apt.conf.d/docker-clean",
    )  # fmt: skip
    docker("commit", "--change", f"LABEL {SESSION_LABEL}", name, hub_like)
    docker("rm", name)

    path = shared.cwd / "hub"
    path.mkdir()
    spec = (
        f"version: 1\nbase:\n  image: {hub_like}\npython: '3.11'\nsystem: [jq]\npackages: [six]\n"
    )
    (path / "envd.yaml").write_text(spec)
    first = build_json(shared, path)
    assert [s["name"] for s in first["steps"]] == ["base", "system", "venv", "packages", "metadata"]
    assert not any(s["cached"] for s in first["steps"][1:])
    assert docker("run", "--rm", first["image"], "jq", "--version").startswith("jq-")
    in_image = docker(
        "run", "--rm", first["image"], "sh", "-c",
        "ls /var/cache/apt/envd-archives /var/lib/apt/lists 2>/dev/null; "
        "find / -xdev -name '*.deb' | head",
    )  # fmt: skip
    assert ".deb" not in in_image and "Packages" not in in_image, in_image
    cached = docker(
        "run",
        "--rm",
        "-v",
        f"{shared.namespace}-apt-archives:/c",
        first["image"],
        "ls",
        "/c/envd-archives",
    )
    assert any(line.startswith("jq_") for line in cached.split()), cached

    (path / "envd.yaml").write_text(spec.replace("[six]", "[six, idna]"))
    shared.ok("lock", str(path))
    plan = {s["name"]: s["cached"] for s in build_json(shared, path, "--dry-run")["steps"]}
    assert plan == {
        "base": True, "system": True, "venv": True, "packages": False, "metadata": False
    }  # fmt: skip
    second = build_json(shared, path)
    kept = len(layers(hub_like)) + 2  # the base's layers, then system and venv
    assert layers(second["image"])[:kept] == layers(first["image"])[:kept]
    assert layers(second["image"])[kept] != layers(first["image"])[kept]
