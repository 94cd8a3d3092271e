"""The team build cache: step images shared through a real local registry, by cache key.

One home builds the sklearn template with `cache` set and pushes its steps; a second home, on
a second, empty engine (it has no base, no step, no uv cache), builds the same envd.lock from
the cache without running a step. A tampered cache entry is refused, removed, and built here
(on that engine too), and the result is the environment an uncached build makes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import warnings
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


@pytest.fixture(scope="module")
def built(shared: Envctl, registry: str) -> tuple[Path, str]:
    """sklearn built once by the first home with the cache on: (project, the build's stderr)."""
    shared.ok("config", "cache", f"{registry}/team/cache")
    path = copy_template("sklearn", shared.cwd / "sk")
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + "name: skc\n")
    proc = shared("build", str(path), timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return path, proc.stderr


def colleague(tmp_path: Path, name: str, registry: str, docker_host: str = "") -> Envctl:
    home = tmp_path / name
    home.mkdir()
    env = _envctl_env(home)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    runner = Envctl(env=env, home=home, cwd=tmp_path)
    runner.ok("config", "cache", f"{registry}/team/cache")
    return runner


def checkout(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def environment_hash(envctl: Envctl, project: Path) -> str:
    return str(json.loads(envctl.ok("fingerprint", str(project), "--json"))["environment_hash"])


def image_of(envctl: Envctl, host: str = "") -> str:
    """The project skc's image in this home (NS/skc:KEY12)."""
    repository = f"{envctl.namespace}/skc"
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository, host=host)
    (image,) = out.split()
    return image


def tags(registry: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/team/cache/tags/list", timeout=10) as r:
        return list(json.loads(r.read())["tags"] or [])


def docker(*args: str, host: str = "") -> str:
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_first_build_pushes_its_steps_once(
    shared: Envctl, built: tuple[Path, str], registry: str
) -> None:
    path, stderr = built
    # A first build has no environment hash to hold cache steps to: it takes none.
    assert "[cache] not taking steps from" in stderr and "[cache] pulled" not in stderr
    assert re.search(r"\[cache\] pushed 4 of 4 steps to " + re.escape(registry), stderr), stderr
    keys = [t for t in tags(registry) if re.fullmatch(r"[0-9a-f]{64}", t)]
    assert len(keys) == 4 and sorted(tags(registry)) == sorted(keys + [f"rec-{k}" for k in keys])
    # A build that ran nothing asks the cache nothing.
    assert "[cache]" not in shared("build", str(path)).stderr


@pytest.fixture
def second_engine(request: pytest.FixtureRequest) -> str:
    """The empty second engine when it is there, else the local one (its own home)."""
    try:
        return str(request.getfixturevalue("remote_docker_host"))
    except pytest.skip.Exception as exc:
        warnings.warn(f"the build cache tests use the local engine: {exc}", stacklevel=1)
        return ""


def test_second_home_on_an_empty_engine_builds_from_the_cache(
    shared: Envctl, built: tuple[Path, str], registry: str, tmp_path: Path, second_engine: str
) -> None:
    path, _ = built
    other = colleague(tmp_path, "home2", registry, second_engine)
    try:
        mine = docker("image", "inspect", "--format", "{{.Id}}", image_of(shared)).strip()
        absent = subprocess.run(
            ["docker", "image", "inspect", mine],
            env={**os.environ, **({"DOCKER_HOST": second_engine} if second_engine else {})},
            capture_output=True,
        )
        assert absent.returncode != 0 or not second_engine  # the second engine lacks it
        project = checkout(path, tmp_path / "sk")
        proc = other("build", str(project), timeout=1200)
        assert proc.returncode == 0, proc.stderr
        assert f"[cache] pulled 4 of 4 steps from {registry}/team/cache" in proc.stderr
        assert "running:" not in proc.stderr, proc.stderr  # no step ran here
        assert "pushed 0 of 4 steps" in proc.stderr  # everything was there already
        assert environment_hash(other, project) == environment_hash(shared, path)
        image = image_of(other, second_engine)
        assert image.split(":")[-1] == image_of(shared).split(":")[-1]
        code = "import sklearn, pandas; print(sklearn.__version__)"
        out = docker("run", "--rm", image, "python", "-c", code, host=second_engine)
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?\n", out), out
    finally:
        other("stop", "--all", timeout=60)
        stop_daemon(other)


def test_a_tampered_entry_is_refused_and_built_here(
    shared: Envctl, built: tuple[Path, str], registry: str, tmp_path: Path, second_engine: str
) -> None:
    path, _ = built
    image = image_of(shared)
    final_key = image.split(":")[-1]
    (key,) = [t for t in tags(registry) if t.startswith(final_key) and len(t) == 64]
    reference = f"{registry}/team/cache:{key}"
    # Whoever can push replaces the last step's image: one file of sklearn changed.
    site = "/opt/venv/lib/python3.11/site-packages/sklearn/__init__.py"
    container = docker("create", image, "sh", "-c", f"echo 'EVIL = 1' >> {site}").strip()
    try:
        docker("start", "-a", container)
        docker("commit", container, reference)
        docker("push", reference)
    finally:
        docker("rm", "-f", container)
        subprocess.run(["docker", "rmi", reference], capture_output=True)
    other = colleague(tmp_path, "home3", registry, second_engine)
    try:
        project = checkout(path, tmp_path / "sk3")
        proc = other("build", str(project), timeout=1200)
        assert proc.returncode == 0, proc.stderr
        assert f"[cache] refused {registry}/team/cache:{key[:12]} (metadata)" in proc.stderr
        assert "(building it here)" in proc.stderr
        assert "[cache] pulled 3 of 4 steps" in proc.stderr  # the packages step was sound
        assert "[metadata] running:" in proc.stderr
        assert environment_hash(other, project) == environment_hash(shared, path)
        # The refused entry was pushed again: the next colleague gets all four steps.
        assert "pushed 1 of 4 steps" in proc.stderr
        mine = image_of(other, second_engine)
        assert "EVIL" not in docker("run", "--rm", mine, "cat", site, host=second_engine)
    finally:
        other("stop", "--all", timeout=60)
        stop_daemon(other)


def test_a_forged_record_is_caught_by_the_locks_environment(
    shared: Envctl, built: tuple[Path, str], registry: str, tmp_path: Path, second_engine: str
) -> None:
    """Whoever can push rewrites the packages step (one extra file, which no RECORD owns)
    and its record to match, and removes the last step: the pulled prefix passes its own
    checks, but the environment built on it is not the lock's, so it is built again here."""
    from envd.gateways.engine import Engine
    from envd.gateways.registry import RegistryClient, parse_repository
    from envd.services.buildcache import StepRecord
    from envd.services.content import ContentHasher

    path, _ = built
    client, repository = RegistryClient(), parse_repository(f"{registry}/team/cache")
    records = {}
    for tag in tags(registry):
        if tag.startswith("rec-"):
            data = client.get_record(repository, tag)
            assert data is not None
            records[tag] = StepRecord.from_bytes(data)
    (packages,) = [r for r in records.values() if r.step == "packages"]
    (final,) = [r for r in records.values() if r.step == "metadata"]
    for tag in (final.key, f"rec-{final.key}"):
        url = f"http://{registry}/v2/team/cache/manifests/{tag}"
        accept = "application/vnd.docker.distribution.manifest.v2+json, "
        accept += "application/vnd.oci.image.manifest.v1+json"
        head = urllib.request.Request(url, method="HEAD", headers={"Accept": accept})
        with urllib.request.urlopen(head, timeout=10) as r:
            digest = r.headers["Docker-Content-Digest"]
        delete = f"http://{registry}/v2/team/cache/manifests/{digest}"
        urllib.request.urlopen(urllib.request.Request(delete, method="DELETE"), timeout=10)
    site = "/opt/venv/lib/python3.11/site-packages"
    script = f"echo 'EVIL = 1' > {site}/evil_extra.py"
    container = docker("create", packages.image_id, "sh", "-c", script).strip()
    reference = f"{registry}/team/cache:{packages.key}"
    try:
        docker("start", "-a", container)
        forged = docker("commit", container, reference).strip()
        engine = Engine()
        info = engine.inspect_image(forged)
        assert info is not None
        digest = ContentHasher(engine, tmp_path / "layers").content_hash(forged)
        docker("push", reference)
        record = StepRecord(packages.key, "packages", info.id, info.layers, digest)
        client.put_record(repository, f"rec-{packages.key}", record.to_bytes())
    finally:
        docker("rm", "-f", container)
        subprocess.run(["docker", "rmi", reference], capture_output=True)
    other = colleague(tmp_path, "home4", registry, second_engine)
    try:
        project = checkout(path, tmp_path / "sk4")
        proc = other("build", str(project), timeout=1800)
        assert proc.returncode == 0, proc.stderr
        assert "[cache] pulled 3 of 4 steps" in proc.stderr
        assert "this machine built a different environment" in proc.stderr
        assert "(building it here)" in proc.stderr
        assert "[packages] running:" in proc.stderr
        assert environment_hash(other, project) == environment_hash(shared, path)
        assert "pushed 2 of 4 steps" in proc.stderr  # the forged one and the missing last
        mine = image_of(other, second_engine)
        out = docker("run", "--rm", mine, "ls", site, host=second_engine)
        assert "evil_extra.py" not in out.split()
    finally:
        other("stop", "--all", timeout=60)
        stop_daemon(other)


def test_the_setting_is_checked_and_a_project_may_have_its_own(
    envctl: Envctl, project: object, registry: str
) -> None:
    bad = envctl("config", "cache", "http://127.0.0.1:5000/team/cache")
    assert bad.returncode == 2 and "without a scheme" in bad.stderr
    assert "e.g. registry.example.com/team/envd-cache" in bad.stderr
    assert "cache" not in (envctl.home / "config.yaml").read_text()  # nothing was written
    unknown = envctl("config", "cache", f"{registry}/team/other", "--project", "nope")
    assert unknown.returncode == 4 and "no project `nope` is registered" in unknown.stderr
    path = project("p1", "version: 1\nbase: {debian: bookworm}\nname: p1\n")  # type: ignore[operator]
    envctl.ok("add", str(path))
    envctl.ok("config", "cache", f"{registry}/team/cache")
    envctl.ok("config", "cache", "off", "--project", str(path))
    shown = json.loads(envctl.ok("--json", "config"))
    assert shown["cache"] == f"{registry}/team/cache" and shown["cache[p1]"] == "off"
    envctl.ok("config", "cache", "", "--project", "p1")
    assert "cache[p1]" not in json.loads(envctl.ok("--json", "config"))
    assert envctl("config", "idle_timeout", "5", "--project", "p1").returncode == 2
