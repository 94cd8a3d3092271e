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


@pytest.fixture(scope="module")
def default_project(shared: Envctl, default_build_cache: DefaultBuildCache) -> Path:
    """environments/default, copied and built once per module (project `dflt`).

    The worker's first module builds it and pushes its steps to the worker's build cache
    (envd's own team cache, `envctl config cache --project dflt`); later modules copy that
    build's envd.lock, so their builds take every step from the cache, verified as a user's
    would be (IDs, layers, content hash, the lock's environment hash). Tests that must see a
    cold build make their own copy of the template."""
    cache = default_build_cache
    path = copy_template("default", shared.cwd / "default")
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + "name: dflt\n")
    if cache.lock is not None:
        (path / "envd.lock").write_bytes(cache.lock)
    shared.ok("add", str(path))  # (a project's own cache setting names a registered project)
    shared.ok("config", "cache", f"{cache.registry}/envd-tests/default", "--project", "dflt")
    shared.ok("build", str(path))
    if cache.lock is None:
        cache.lock = (path / "envd.lock").read_bytes()
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
