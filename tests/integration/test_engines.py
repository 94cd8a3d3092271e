"""The engines users run: Docker 26 (Debian 13's docker.io), classic and containerd image store,
and Podman 4.3 (Debian 12's podman) through its Docker-compatible API, rootful and rootless.

The same envd.lock, built on the machine's Docker 20.10 and on each of those engines, gives the
same environment content hash; the environment is entered (through the agent: the fast path),
shared through a local registry, pulled back into a fresh home, saved to an archive and loaded
again, each verified from the bytes; gc removes what no current lock needs. Each engine builds
environments/default once (module-scoped fixtures).

Rootless Podman is used as its users use it: the service, envd's daemon and envctl all run as an
unprivileged user (tests/integration/podman.py's ROOTLESS_USER), on a Python that user can run
(Debian's /usr/bin/python3, the same cp311 ABI as the venv's, with the venv's site-packages and
the checkout on PYTHONPATH), with its home, cache and projects in a folder that user owns.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import (
    SESSION_CACHE,
    SESSION_LABEL,
    Envctl,
    _envctl_env,
    copy_template,
    stop_daemon,
)
from tests.integration.engines import EngineUnavailable, docker26
from tests.integration.podman import (
    PodmanUnavailable,
    RootlessPodman,
    podman_service,
    rootless_podman_service,
)
from tests.integration.registry import local_registry
from tests.integration.test_build import build_json

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with local_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture(scope="module")
def reference(shared: Envctl, default_project: Path) -> dict[str, str]:
    """What the machine's Docker 20.10 says about environments/default."""
    fingerprint = json.loads(shared.ok("--json", "fingerprint", str(default_project)))
    lock = json.loads((default_project / "envd.lock").read_text())
    return {
        "content_hash": fingerprint["environment"]["content_hash"],
        "environment_hash": fingerprint["environment_hash"],
        "lock_environment_hash": lock["environment_hash"],
    }


class Row(NamedTuple):
    """One engine of the matrix: its name, its DOCKER_HOST, and for rootless Podman the
    service (whose user runs envd)."""

    store: str  # "classic", "containerd", "podman", "podman-rootless"
    host: str
    rootless: RootlessPodman | None = None

    def scratch(self, tmp_path: Path) -> Path:
        """A fresh folder envctl's user can write (tmp_path is root's, 0700)."""
        return self.rootless.workdir("t") if self.rootless else tmp_path

    def give(self, path: Path) -> None:
        """Hand what the test (root) wrote under path to envctl's user."""
        if self.rootless:
            self.rootless.give(path)


@dataclass
class UserEnvctl(Envctl):
    """envctl (and the daemon it starts) run as another user: `argv` runs cli.main as it."""

    argv: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, input: str | None = None, check: bool = False, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.argv, *args]
        self.calls.append(list(args))
        proc = subprocess.run(
            argv, env=self.env, cwd=self.cwd, input=input, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"envctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


def _runner(row: Row, root: Path) -> Envctl:
    home = root / "home"
    home.mkdir(parents=True)
    if row.rootless:
        row.give(root)
        env = row.rootless.envd_env(home, ENVD_ENGINE_LABELS=SESSION_LABEL)
        return UserEnvctl(env=env, home=home, cwd=root, argv=row.rootless.envd_argv())
    env = _envctl_env(home)
    env["DOCKER_HOST"] = row.host
    env.pop("DOCKER_CONTEXT", None)
    return Envctl(env=env, home=home, cwd=root)


@pytest.fixture(scope="module", params=["classic", "containerd", "podman", "podman-rootless"])
def d26(request: pytest.FixtureRequest, engine: None, registry: str) -> Iterator[Row]:
    """A fresh Docker 26 with that image store, or a fresh rootful or rootless Podman that
    trusts the tests' registry."""
    store = str(request.param)
    if os.environ.get("ENVD_TEST_ENGINES", "all") == "default":
        pytest.skip(
            f"ENVD_TEST_ENGINES=default: the {store} engine row is skipped "
            "(the default engine's timing; `make test` without it runs every engine)"
        )
    if store == "podman":
        try:
            with podman_service((registry,)) as host:
                yield Row(store, host)
        except PodmanUnavailable as exc:
            pytest.skip(f"no Podman here: {exc}")
        return
    if store == "podman-rootless":
        try:
            with rootless_podman_service((registry,)) as rootless:
                reason = rootless.why_envd_cannot_run()
                if reason:
                    pytest.skip(f"no rootless Podman row here: {reason}")
                yield Row(store, rootless.host, rootless)
        except PodmanUnavailable as exc:
            pytest.skip(f"no rootless Podman here: {exc}")
        return
    try:
        with docker26(store) as host:  # type: ignore[arg-type]
            yield Row(store, host)
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker 26 ({store} store) here: {exc}")


@pytest.fixture(scope="module")
def built(
    d26: Row, default_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Envctl, Path]]:
    """environments/default with the Docker 20.10 build's envd.lock, built on that engine."""
    root = d26.scratch(tmp_path_factory.mktemp(f"d26-{d26.store}"))
    runner = _runner(d26, root)
    path = copy_template("default", root / "default")
    shutil.copy(default_project / "envd.yaml", path / "envd.yaml")
    shutil.copy(default_project / "envd.lock", path / "envd.lock")
    d26.give(path)
    if d26.rootless:
        d26.rootless.seed_cache(SESSION_CACHE, json.loads((path / "envd.lock").read_text()))
    try:  # a build that fails here has started the row's daemon: it is stopped all the same
        runner.ok("build", str(path))
        yield runner, path
    finally:
        runner("stop", "--all", timeout=60)
        stop_daemon(runner)


def test_info_names_the_engine_and_its_store(d26: Row, built: tuple[Envctl, Path]) -> None:
    store = d26.store
    runner, _ = built
    info = json.loads(runner.ok("--json", "info"))["engine"]
    if store.startswith("podman"):
        rootless = store == "podman-rootless"
        assert info["product"] == "Podman" and info["version"].startswith("4.3.")
        assert info["api_version"] == "1.41" and info["image_store"] == "classic"
        assert info["rootless"] is rootless
        said = runner.ok("info")
        assert "Podman 4.3." in said
        assert ("classic image store, rootless)" if rootless else "image store, rootful)") in said
        return
    assert info["version"].startswith("26.") and info["api_version"] == "1.45"
    assert info["image_store"] == store and info["rootless"] is False
    said = runner.ok("info")
    assert f"{store} image store)" in said and "rootless" not in said


def test_same_lock_same_content_hash(
    d26: Row,
    built: tuple[Envctl, Path],
    reference: dict[str, str],
    shared: Envctl,
    default_project: Path,
    tmp_path: Path,
) -> None:
    runner, path = built
    docker20 = d26.scratch(tmp_path) / "docker20.fingerprint.json"
    shared.ok("fingerprint", str(default_project), "--output", str(docker20))
    d26.give(docker20)
    diff = runner("diff", str(path), str(docker20))
    assert "environment: identical" in diff.stdout, diff.stdout + diff.stderr
    fingerprint = json.loads(runner.ok("--json", "fingerprint", str(path)))
    assert fingerprint["environment"]["content_hash"] == reference["content_hash"]
    assert fingerprint["environment_hash"] == reference["environment_hash"]
    lock = json.loads((path / "envd.lock").read_text())
    assert lock["environment_hash"] == reference["lock_environment_hash"]


def test_lock_resolves_the_same_pins(
    d26: Row, built: tuple[Envctl, Path], default_project: Path
) -> None:
    runner, path = built
    fresh = copy_template("default", path.parent / "relocked")
    spec = (path / "envd.yaml").read_text().replace("name: dflt", "name: relocked")
    (fresh / "envd.yaml").write_text(spec)
    d26.give(fresh)
    runner.ok("lock", str(fresh))
    mine = json.loads((fresh / "envd.lock").read_text())
    theirs = json.loads((default_project / "envd.lock").read_text())
    for key in ("base", "target", "system", "python", "inputs_hash"):
        assert mine[key] == theirs[key], key


def test_enter_runs_a_command(d26: Row, built: tuple[Envctl, Path]) -> None:
    runner, path = built
    out = runner.ok(
        "enter", str(path), "--", "python", "-c", "import numpy; print(numpy.ones(2).sum())"
    )
    assert out == "2.0\n"
    proc = runner("enter", str(path), "--", "sh", "-c", "exit 7")
    assert proc.returncode == 7
    # The fast path: the command's parent is the envd agent in the container, not `docker exec`.
    parent = runner.ok("enter", str(path), "--", "sh", "-c", 'tr "\\0" " " </proc/$PPID/cmdline')
    assert "/run/envd/agent.py" in parent, parent
    # The command runs as the caller, and what it writes in the project is the caller's on the
    # host (rootless Podman: its user namespace keeps the caller's uid, `keep-id`).
    me = d26.rootless.uid if d26.rootless else os.getuid()
    out = runner.ok("enter", str(path), "--", "sh", "-c", "id -u; echo hi > /workspace/made")
    assert out == f"{me}\n"
    assert (path / "made").stat().st_uid == me and (path / "made").read_text() == "hi\n"


def test_share_and_pull_into_a_fresh_home(
    d26: Row,
    built: tuple[Envctl, Path],
    registry: str,
    reference: dict[str, str],
    tmp_path: Path,
) -> None:
    store, host, _ = d26
    runner, path = built
    shared = json.loads(
        runner.ok("--json", "share", "image", str(path), "--to", f"{registry}/d26/{store}")
    )["result"]
    assert shared["reference"].startswith(f"{registry}/d26/{store}@sha256:")
    root = d26.scratch(tmp_path)
    colleague = _runner(d26, root)
    try:
        checkout = root / "checkout"
        checkout.mkdir()
        for name in ("envd.yaml", "envd.lock"):
            (checkout / name).write_bytes((path / name).read_bytes())
        d26.give(checkout)
        colleague.ok("add", str(checkout))
        env = {**os.environ, "DOCKER_HOST": host}
        subprocess.run(["docker", "rmi", shared["reference"]], env=env, capture_output=True)
        out = colleague.ok("pull", shared["reference"])
        assert "verified" in out and "registered for project" in out
        assert "up to date" in colleague.ok("build", str(checkout))
        fingerprint = json.loads(colleague.ok("--json", "fingerprint", str(checkout)))
        assert fingerprint["environment"]["content_hash"] == reference["content_hash"]
        out = colleague.ok("enter", str(checkout), "--", "python", "-c", "print(1)")
        assert out == "1\n"
    finally:
        colleague("stop", "--all", timeout=60)
        stop_daemon(colleague)


def test_save_and_load_into_a_fresh_home(
    d26: Row, built: tuple[Envctl, Path], tmp_path: Path
) -> None:
    runner, path = built
    root = d26.scratch(tmp_path)
    archive = root / "dflt.tar.gz"
    runner.ok("share", "image", str(path), "--output", str(archive))
    colleague = _runner(d26, root)
    try:
        assert "verified" in colleague.ok("load", str(archive))
    finally:
        stop_daemon(colleague)


def test_gc_keeps_what_a_current_lock_needs(d26: Row, built: tuple[Envctl, Path]) -> None:
    host = d26.host
    runner, path = built
    gc = copy_template("default", path.parent / "gc")
    spec = (path / "envd.yaml").read_text().replace("name: dflt", "name: gcme")
    (gc / "envd.yaml").write_text(spec)
    d26.give(gc)
    first = build_json(runner, gc)["image"]
    (gc / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - certifi"))
    runner.ok("lock", str(gc))
    second = build_json(runner, gc)["image"]
    names = {r["image"] for r in json.loads(runner.ok("--json", "gc"))["removed"]}
    assert first in names and second not in names
    env = {**os.environ, "DOCKER_HOST": host}
    gone = subprocess.run(["docker", "image", "inspect", first], env=env, capture_output=True)
    assert gone.returncode != 0
    assert "up to date" in runner.ok("build", str(gc))
    assert "up to date" in runner.ok("build", str(path))  # the other project's image is kept
