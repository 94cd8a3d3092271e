"""A daemon shared by a module's tests, with projects built once (builds cost seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, copy_template, stop_daemon
from tests.integration.registry import local_registry


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, engine: None) -> Iterator[Envctl]:
    """One daemon for the whole module (its own home), stopped at the end."""
    root = tmp_path_factory.mktemp("shared")
    home = root / "home"
    home.mkdir()
    runner = Envctl(env=_envctl_env(home), home=home, cwd=root)
    yield runner
    runner("stop", "--all", timeout=60)
    stop_daemon(runner)


@dataclass
class DefaultBuildCache:
    """This worker's team build cache for `default_project`: a real local registry, and the
    envd.lock the worker's first build of it wrote (with the environment hash it recorded)."""

    registry: str
    lock: bytes | None = None


@pytest.fixture(scope="session")
def default_build_cache(
    tmp_path_factory: pytest.TempPathFactory, engine: None
) -> Iterator[DefaultBuildCache]:
    with local_registry(tmp_path_factory.mktemp("steps-registry")) as address:
        yield DefaultBuildCache(address)


def from_default_cache(runner: Envctl, path: Path, name: str, cache: DefaultBuildCache) -> None:
    """Register `path`, a copy of environments/default, as project `name` whose own build cache
    is the worker's (`envctl config cache REGISTRY/envd-tests/default --project NAME`), and
    build it as `default_project` is built: the cached envd.lock goes in first if the worker has
    one, so every step comes from the cache, verified as a user's build is (a fresh lock records
    no environment hash: nothing is pulled for it); the worker's first such build records the
    envd.lock it wrote. `name:` is appended to envd.yaml unless it has one (it must then be
    `name`); the lock's inputs leave out `name:` and `runs:`, so a copy that adds only those
    takes the cached lock as it is. Tests that must see a cold build, or an envd.lock written
    from scratch, make their copy without this, as do tests whose later builds of a lock they
    edit would build every step here anyway (a pulled image brings only the last step's tag)."""
    spec = path / "envd.yaml"
    text = spec.read_text()
    named = [line for line in text.splitlines() if line.startswith("name:")]
    if not named:
        spec.write_text(text + f"name: {name}\n")
    assert named in ([], [f"name: {name}"]), (named, name)
    if cache.lock is not None:
        (path / "envd.lock").write_bytes(cache.lock)
    runner.ok("add", str(path))  # (a project's own cache setting names a registered project)
    runner.ok("config", "cache", f"{cache.registry}/envd-tests/default", "--project", name)
    runner.ok("build", str(path))
    if cache.lock is None:
        cache.lock = (path / "envd.lock").read_bytes()


@pytest.fixture(scope="module")
def default_project(shared: Envctl, default_build_cache: DefaultBuildCache) -> Path:
    """environments/default, copied and built once per module (project `dflt`).

    The worker's first module builds it and pushes its steps to the worker's build cache
    (envd's own team cache, `envctl config cache --project dflt`); later modules copy that
    build's envd.lock, so their builds take every step from the cache, verified as a user's
    would be (IDs, layers, content hash, the lock's environment hash): `from_default_cache`.
    Tests that must see a cold build make their own copy of the template."""
    path = copy_template("default", shared.cwd / "default")
    from_default_cache(shared, path, "dflt", default_build_cache)
    return path


@pytest.fixture(scope="session")
def remote_docker_host(engine: None) -> Iterator[str]:
    """A second, empty engine that cannot see the tests' files: "tcp://127.0.0.1:PORT"."""
    from tests.integration.remote_engine import RemoteEngineUnavailable, remote_engine

    try:
        with remote_engine() as host:
            yield host
    except RemoteEngineUnavailable as e:
        pytest.skip(f"no second Docker engine here: {e}")


def remote_runner(root: Path, host: str) -> Envctl:
    """envctl with a home of its own under root whose daemon's engine is `host`."""
    home = root / "home"
    home.mkdir()
    env = _envctl_env(home)
    env["DOCKER_HOST"] = host
    env.pop("DOCKER_CONTEXT", None)
    return Envctl(env=env, home=home, cwd=root)
