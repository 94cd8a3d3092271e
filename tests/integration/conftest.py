"""A daemon shared by a module's tests, with projects built once (builds cost seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, copy_template, stop_daemon


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


@pytest.fixture(scope="module")
def default_project(shared: Envctl) -> Path:
    """environments/default, copied and built once per module."""
    path = copy_template("default", shared.cwd / "default")
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + "name: dflt\n")
    shared.ok("build", str(path))
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
