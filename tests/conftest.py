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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Under pytest-xdist (`-n N`) every worker imports this module in its own process: a worker's
# label is the controller's run id (`--testrunuid`, set below) and its own worker id, so what a
# test counts by label is its worker's alone, as in a run without xdist. The controller removes
# every worker's objects once, after the last worker has ended: a worker that ended first must
# not remove images another worker still builds on, such as the Debian base tags all homes share.
SESSION_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
SESSION_LABEL = f"envd.test={SESSION_ID[:12]}" + (f"-{_WORKER}" if _WORKER else "")
# GNU readline, which xdist's workers load, exports COLUMNS=80 and LINES=24 into the worker's
# environment, and the daemons a test starts inherit it (envd reads uv's `--help`, which uv wraps
# to COLUMNS): a worker's tests get these two as the controller had them (its shell's).
TERMINAL_VARS = ("COLUMNS", "LINES")


def _not_in_controller() -> list[str]:
    return os.environ.get("ENVD_TEST_CONTROLLER_LACKS", "").split() if _WORKER else []


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
    for name in _not_in_controller():
        monkeypatch.delenv(name, raising=False)


def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_WORKERS: set[str] = set()  # the xdist controller's record of the workers it started


def pytest_configure(config: pytest.Config) -> None:
    if _WORKER is None and getattr(config.option, "testrunuid", "") is None:
        config.option.testrunuid = SESSION_ID  # the workers' labels start with this one's
    if _WORKER is None and getattr(config.option, "numprocesses", None):  # workers start later
        lacks = " ".join(name for name in TERMINAL_VARS if name not in os.environ)
        os.environ["ENVD_TEST_CONTROLLER_LACKS"] = lacks


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    _WORKERS.add(str(node.workerinput["workerid"]))


# Test modules that start engines of their own (a second dockerd in a mount namespace, Docker 26,
# Podman): each picks a free bridge subnet and ports as it starts, so under xdist they all run on
# one worker, one after another, as they do without it.
STARTS_ENGINES = ("remote_docker_host", "docker26(", "podman_service(")
# Modules whose tests are independent builds, each long (the real-project corpus: one project
# per test, each locked and built in its own folder): under xdist each test is a unit of its own.
EACH_TEST_A_UNIT = ("tests/integration/test_real_projects.py",)
_STARTS_ENGINES: dict[str, bool] = {}


def _starts_engines(rootpath: Path, module: str) -> bool:
    if module not in _STARTS_ENGINES:
        path = rootpath / module
        text = path.read_text() if path.is_file() else ""
        _STARTS_ENGINES[module] = any(name in text for name in STARTS_ENGINES)
    return _STARTS_ENGINES[module]


def _work_unit(rootpath: Path, nodeid: str) -> str:
    """The xdist work unit a test belongs to: its module, the engine-starting group, or (for
    EACH_TEST_A_UNIT) the test itself."""
    module = nodeid.split("::", 1)[0]
    if module in EACH_TEST_A_UNIT:
        return nodeid
    return "second-engines" if _starts_engines(rootpath, module) else module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run order, which xdist's workers take units in (`make test`): the engine-starting group
    first (the longest unit), then the other integration modules, then the unit tests, which
    take seconds and fill the workers' last minutes. The order inside a module is kept."""
    rootpath = Path(config.rootpath)

    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        if _starts_engines(rootpath, module):
            return 0
        return 1 if module.startswith("tests/integration/") else 2

    items.sort(key=rank)  # (stable: modules and their tests keep their order within a rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile` (`make test`): each test module runs whole on one worker, so its
    module-scoped homes, daemons and builds are made once, as without xdist; the modules that
    start engines of their own are one unit, and each corpus project is one. Units are handed
    out in collection order (above), not xdist's largest-count-first, which put the unit
    tests' many small modules first and a four-minute two-test module last. (xdist's own
    `loadgroup` cannot be used: it tags node ids through a pytest attribute that pytest 9 no
    longer reads.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False
    rootpath = Path(config.rootpath)

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(rootpath, nodeid)

    return Scheduling(config, log)  # type: ignore[arg-type]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The xdist controller removes the run's engine objects once every worker has ended."""
    if _WORKERS and engine_available():
        for worker in sorted(_WORKERS):
            remove_labelled(f"{SESSION_LABEL}-{worker}")


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    """The real Docker engine; what the session made on it is removed afterwards (under xdist,
    by the controller: see pytest_sessionfinish)."""
    if not engine_available():
        pytest.fail("no Docker engine answers: run `make setup` (the README's setup) first")
    yield
    if _WORKER is None:
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

    @contextmanager
    def no_background_builds(self) -> Iterator[None]:
        """The daemon's watcher rebuilds a changed project, or one whose image went missing, in
        the background: not while a test watches a build of its own or removes an image."""
        self.ok("config", "rebuild_on_change", "false")
        try:
            yield
        finally:
            self.ok("config", "rebuild_on_change", "true")

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
    for name in _not_in_controller():
        env.pop(name, None)
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
