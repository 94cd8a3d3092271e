"""One read of a project per request, and one staleness answer: `status`, `lock --check`, the
watcher and `build` all name a direct URL that moved since envd.lock was written."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from envd.daemon.rpc.status import StatusRpc
from envd.errors import LockStale
from envd.events import EventBus
from envd.gateways.projectfiles import load_spec
from envd.gateways.store import ProjectRow, Store
from envd.model.lockfile import PythonPackage, dumps, inputs_from_spec
from envd.model.state import ProjectState
from envd.services.locker import Locker
from envd.services.projects import Projects
from envd.services.watching import judge
from envd.v1 import envd_pb2 as pb
from tests.unit.model.test_lockfile import make_lock
from tests.unit.services.test_imagestore import CPU_HOST

DIGEST = "ab" * 32
WHEEL_URL = "https://files.example.org/w/tiny_pkg-1.2.0-py3-none-any.whl"
MOVED = f"{WHEEL_URL}?v=2"
REASON = f"tiny-pkg's URL changed: {WHEEL_URL} → {MOVED}"


@dataclass
class World:
    store: Store
    projects: Projects
    locker: Locker
    row: ProjectRow


def write_project(folder: Path, url: str, locked_url: str) -> None:
    """envd.yaml requiring tiny-pkg from `url`, and a lock (its inputs in sync with that
    envd.yaml) that holds tiny-pkg from `locked_url`."""
    (folder / "envd.yaml").write_text(
        f'name: p\nbase:\n  debian: bookworm\npython: "3.11"\npackages:\n  - tiny-pkg @ {url}\n'
    )
    spec = load_spec(folder)
    package = PythonPackage("tiny-pkg", "1.2.0", (f"sha256:{DIGEST}",), "", locked_url)
    (folder / "envd.lock").write_text(
        dumps(make_lock(inputs=inputs_from_spec(spec), python=(package,)))
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    folder = tmp_path / "p"
    folder.mkdir()
    write_project(folder, MOVED, WHEEL_URL)
    store = Store(tmp_path / "state.db")
    events = EventBus()
    projects = Projects(store, events)
    locker = Locker(projects, None, events, store, tmp_path / "cache")  # type: ignore[arg-type]
    yield World(store, projects, locker, projects.add(folder))
    store.close()


def status_reasons(world: World) -> list[str]:
    services = SimpleNamespace(
        projects=world.projects,
        host=SimpleNamespace(host=CPU_HOST),
        warm=SimpleNamespace(all=lambda: []),
    )
    rpc = StatusRpc()
    rpc.services = services  # type: ignore[assignment]
    reply = rpc.ProjectStatus(pb.ProjectRef(ref="p"), None)  # type: ignore[arg-type]
    return list(reply.stale_reasons)


class NoImages:
    """The watcher's images: none is current (the lock's staleness is judged before)."""

    def current_image(self, row: Any, **kwargs: Any) -> None:
        return None


def test_status_check_watcher_and_snapshot_agree_on_a_moved_url(world: World) -> None:
    assert world.projects.snapshot(world.row).reasons == (REASON,)
    assert status_reasons(world) == [REASON]
    with pytest.raises(LockStale) as stale:
        world.locker.check(world.row)
    assert stale.value.message.endswith(f"is out of date: {REASON}")
    verdict = judge(world.row, world.projects, NoImages())  # type: ignore[arg-type]
    assert verdict.state == ProjectState.STALE and REASON in verdict.reason
    assert verdict.action == ""  # a committed lock is never rewritten by the watcher


def test_they_agree_the_lock_is_current_when_the_url_is_the_locked_one(world: World) -> None:
    write_project(Path(world.row.path), WHEEL_URL, WHEEL_URL)
    assert world.projects.snapshot(world.row).reasons == ()
    assert status_reasons(world) == []
    assert world.locker.check(world.row).in_sync
    verdict = judge(world.row, world.projects, NoImages())  # type: ignore[arg-type]
    assert verdict.reason == "the image is older than envd.lock"  # stale only for the image


def test_a_changed_required_digest_is_one_reason_everywhere(world: World) -> None:
    write_project(Path(world.row.path), f"{WHEEL_URL}#sha256={'ef' * 32}", WHEEL_URL)
    (reason,) = world.projects.snapshot(world.row).reasons
    assert "required sha256 changed" in reason
    assert status_reasons(world) == [reason]
    with pytest.raises(LockStale, match="required sha256 changed"):
        world.locker.check(world.row)
