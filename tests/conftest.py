"""Shared fixtures.

Every test gets its own $ENVD_HOME (touching the user's real state is impossible). Integration
tests start a real daemon on a temporary socket and drive it through the real `envctl` in a
subprocess; everything they create on the engine carries `envd.test=<session id>` and is removed
when the session ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SESSION_LABEL = f"envd.test={uuid.uuid4().hex[:12]}"
# Base tarballs and uv caches are shared by the whole session (they are content-addressed).
SESSION_CACHE = Path(os.environ.get("ENVD_TEST_CACHE", "/tmp/envd-test-cache"))


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("envd-home")
    monkeypatch.setenv("ENVD_HOME", str(home))
    monkeypatch.setenv("ENVD_SOCKET", str(home / "envd.sock"))
    monkeypatch.setenv("ENVD_ENGINE_LABELS", SESSION_LABEL)
    monkeypatch.setenv("ENVD_CACHE", str(SESSION_CACHE))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)


def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    """The real Docker engine; what the session made on it is removed afterwards."""
    if not engine_available():
        pytest.fail("no Docker engine answers: run `make setup` (the README's setup) first")
    yield
    remove_labelled(SESSION_LABEL)


def remove_labelled(label: str) -> None:
    def ids(*args: str) -> list[str]:
        out = subprocess.run(["docker", *args], capture_output=True, text=True).stdout
        return [line for line in out.split() if line]

    containers = ids("ps", "-aq", "--filter", f"label={label}")
    if containers:
        subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
    # A parent with children cannot be removed, even forced: repeat until nothing more goes.
    for _ in range(6):
        images = sorted(set(ids("images", "-q", "--filter", f"label={label}")))
        if not images:
            break
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)
    volumes = ids("volume", "ls", "-q", "--filter", f"label={label}")
    if volumes:
        subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)


@dataclass
class Envctl:
    """Runs the real envctl in a subprocess against one daemon."""

    env: dict[str, str]
    home: Path
    cwd: Path
    calls: list[list[str]] = field(default_factory=list)

    def __call__(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "cli.main", *args]
        self.calls.append(list(args))
        proc = subprocess.run(
            argv,
            env=self.env,
            cwd=self.cwd,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"envctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def ok(self, *args: str, input: str | None = None) -> str:
        return self(*args, input=input, check=True).stdout

    @property
    def namespace(self) -> str:
        """This home's prefix for images (`NS/proj:KEY`) and volumes (`NS-uv-cache`)."""
        from envd.daemon.wiring import namespace_of, owner_of
        from envd.paths import resolve_paths

        return namespace_of(owner_of(resolve_paths({"ENVD_HOME": str(self.home)})))


def _envctl_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ENVD_HOME=str(home),
        ENVD_SOCKET=str(home / "envd.sock"),
        ENVD_ENGINE_LABELS=SESSION_LABEL,
        ENVD_CACHE=str(SESSION_CACHE),
        PYTHONPATH=str(ROOT),
    )
    return env


@pytest.fixture
def envctl(tmp_path: Path) -> Iterator[Envctl]:
    """envctl with a private home; the daemon it autostarts is stopped afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    runner = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    yield runner
    stop_daemon(runner)


def stop_daemon(runner: Envctl) -> None:
    pid_file = runner.home / "envd.pid"
    if not pid_file.exists():
        return
    runner("daemon", "stop", timeout=30)
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path) -> callable:  # type: ignore[valid-type]
    """Make a project directory from text: project('name', 'envd.yaml text', extra files)."""

    def make(name: str, spec: str, **files: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "envd.yaml").write_text(spec)
        for filename, text in files.items():
            (path / filename).write_text(text)
        return path

    return make


def copy_template(name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "environments" / name / "envd.yaml", dest / "envd.yaml")
    return dest
