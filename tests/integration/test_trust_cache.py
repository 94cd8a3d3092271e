"""F5: a poisoned team cache step reaches neither a build nor envd.lock.

One home builds environments/default with a cache on a real local registry and pushes its
steps. Whoever can push to the registry (it is anonymous) then replaces the packages step with
one that also holds /etc/profile.d/evil.sh, writes a record that agrees with it (its content
hash computed as a pusher computes it), and removes the last step. A colleague whose envd.lock
has no environment hash yet has nothing to check such a step against: the build takes nothing
from the cache, the evil file is not in the environment, and the hash written into the lock is
the honest one.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import SESSION_LABEL, Envctl, _envctl_env, copy_template, stop_daemon
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration

EVIL = "/etc/profile.d/evil.sh"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="module")
def honest(shared: Envctl, registry: str) -> tuple[Path, str]:
    """environments/default built once with the cache on: (project, its envd.lock's hash)."""
    shared.ok("config", "cache", f"{registry}/team/cache")
    path = copy_template("default", shared.cwd / "tc")
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + "name: tcache\n")
    proc = shared("build", str(path), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    assert "[cache] pushed 4 of 4 steps" in proc.stderr, proc.stderr
    recorded = json.loads((path / "envd.lock").read_text())["environment_hash"]
    assert recorded.startswith("sha256:")
    return path, str(recorded)


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def tags(registry: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/team/cache/tags/list", timeout=10) as r:
        return list(json.loads(r.read())["tags"] or [])


def poison(registry: str, scratch: Path) -> None:
    """What an attacker with push access does: a packages step with an extra profile script
    and a self-consistent record under the same tags; the last step removed."""
    from envd.gateways.engine import Engine
    from envd.gateways.registry import RegistryClient, parse_repository
    from envd.services.buildcache import StepRecord
    from envd.services.content import ContentHasher

    client, repository = RegistryClient(), parse_repository(f"{registry}/team/cache")
    records = []
    for tag in tags(registry):
        if tag.startswith("rec-"):
            data = client.get_record(repository, tag)
            assert data is not None
            records.append(StepRecord.from_bytes(data))
    (packages,) = [r for r in records if r.step == "packages"]
    (final,) = [r for r in records if r.step == "metadata"]
    accept = "application/vnd.docker.distribution.manifest.v2+json, "
    accept += "application/vnd.oci.image.manifest.v1+json"
    for tag in (final.key, f"rec-{final.key}"):
        url = f"http://{registry}/v2/team/cache/manifests/{tag}"
        head = urllib.request.Request(url, method="HEAD", headers={"Accept": accept})
        with urllib.request.urlopen(head, timeout=10) as r:
            digest = r.headers["Docker-Content-Digest"]
        delete = f"http://{registry}/v2/team/cache/manifests/{digest}"
        urllib.request.urlopen(urllib.request.Request(delete, method="DELETE"), timeout=10)
    script = f"mkdir -p /etc/profile.d && echo 'echo pwned' > {EVIL}"
    container = docker("create", packages.image_id, "sh", "-c", script).strip()
    reference = f"{registry}/team/cache:{packages.key}"
    try:
        docker("start", "-a", container)
        forged = docker("commit", "--change", f"LABEL {SESSION_LABEL}", container, reference)
        engine = Engine()
        info = engine.inspect_image(forged.strip())
        assert info is not None and info.id != packages.image_id
        digest = ContentHasher(engine, scratch / "layers").content_hash(info.id)
        assert digest != packages.content_hash  # the files differ; the record will agree
        docker("push", reference)
        record = StepRecord(packages.key, "packages", info.id, info.layers, digest)
        client.put_record(repository, f"rec-{packages.key}", record.to_bytes())
    finally:
        docker("rm", "-f", container)
        subprocess.run(["docker", "rmi", reference], capture_output=True)


def test_a_fresh_lock_takes_no_cache_step_and_records_the_honest_hash(
    honest: tuple[Path, str], registry: str, tmp_path: Path
) -> None:
    from envd.model.lockfile import dumps, loads

    path, honest_hash = honest
    poison(registry, tmp_path)
    # A colleague's checkout whose lock has no environment hash yet (fresh or updated pins).
    project = tmp_path / "tc"
    project.mkdir()
    (project / "envd.yaml").write_bytes((path / "envd.yaml").read_bytes())
    lock = loads((path / "envd.lock").read_text(), "envd.lock")
    (project / "envd.lock").write_text(dumps(replace(lock, environment_hash="")))
    home = tmp_path / "home-b"
    home.mkdir()
    other = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    other.ok("config", "cache", f"{registry}/team/cache")
    try:
        proc = other("build", str(project), timeout=1800)
        assert proc.returncode == 0, proc.stderr
        entered = other("enter", str(project), "--", "test", "!", "-e", EVIL, timeout=300)
        assert entered.returncode == 0, (entered.stdout, entered.stderr)
        written = json.loads((project / "envd.lock").read_text())["environment_hash"]
        assert written == honest_hash
        assert "[cache] pulled" not in proc.stderr, proc.stderr
        assert "[packages] running:" in proc.stderr  # built here
        assert (
            f"[cache] not taking steps from {registry}/team/cache: envd.lock records no "
            "environment hash yet to check them against (building here)"
        ) in proc.stderr
    finally:
        other("stop", "--all", timeout=60)
        stop_daemon(other)
