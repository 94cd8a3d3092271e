"""Warm-container decisions with a fake engine: reuse, replace, restart the dead, reap."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from envd.config import Config
from envd.events import EventBus
from envd.gateways.agent_client import AGENT_SCRIPT, run_in_agent
from envd.gateways.engine import ContainerInfo
from envd.model.names import warm_container
from envd.services.agents import (
    AGENT_FILE,
    AGENT_SOCKET,
    AGENT_SOCKET_DIR,
    NO_AGENT,
    Agents,
    agent_entrypoint,
)
from envd.services.warm import (
    HANDOFF_GRACE_S,
    WarmContainers,
    user_setup_script,
)
from envd.services.warmrecord import WarmRequest, gpu_key
from tests.fakes.engine import FakeEngine

OWNER = "owner-a"


class RecordingBus(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[tuple[str, str]] = []

    def publish(self, kind: str, project: str = "", message: str = "", **fields: str) -> None:
        self.kinds.append((kind, fields.get("reason", "")))
        super().publish(kind, project, message, **fields)


class Config_:
    def __init__(self, timeout: float) -> None:
        self.value = Config(idle_timeout=timeout)

    def __call__(self) -> Config:
        return self.value


def make(
    timeout: float = 1800, engine: FakeEngine | None = None, owner: str = OWNER
) -> tuple[WarmContainers, FakeEngine]:
    engine = engine or FakeEngine()
    return WarmContainers(engine, RecordingBus(), Config_(timeout), owner), engine


REQ = WarmRequest("p", "envd/p:aaa", "sha256:" + "a" * 64, "/src/p")
NEW = WarmRequest("p", "envd/p:bbb", "sha256:" + "b" * 64, "/src/p")
ALL_GPUS = ({"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]},)
GPU_1 = ({"Driver": "nvidia", "DeviceIDs": ["1"], "Capabilities": [["gpu"]]},)


# ---------------------------------------------------------------- reuse, replace, restart


def test_second_ensure_reuses_the_container() -> None:
    warm, engine = make()
    first = warm.ensure(REQ)
    assert warm.ensure(REQ) is first and len(engine.started) == 1
    assert first.name == warm_container("p", REQ.image_id) == "envd-p-aaaaaaaaaaaa"


def test_container_is_labelled_for_rediscovery() -> None:
    warm, engine = make()
    w = warm.ensure(replace(REQ, ports=(8888, 6006), device_requests=GPU_1))
    labels = engine.containers[w.container_id].labels
    assert labels["envd.role"] == "warm" and labels["envd.project"] == "p"
    assert labels["envd.image"] == REQ.image and labels["envd.owner"] == OWNER
    assert labels["envd.ports"] == "8888,6006" and labels["envd.gpus"] == "1"


def test_swapping_projects_keeps_both_warm() -> None:
    warm, engine = make()
    p = warm.ensure(REQ)
    q = warm.ensure(WarmRequest("q", "envd/q:ccc", "sha256:" + "c" * 64, "/src/q"))
    assert warm.ensure(REQ) is p and warm.ensure(replace(REQ, project="q", image="envd/q:ccc"))
    assert len(engine.started) == 2 and {w.container_id for w in warm.all()} == {
        p.container_id,
        q.container_id,
    }


def test_new_image_replaces_an_idle_container() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    old.last_used_at -= HANDOFF_GRACE_S
    new = warm.ensure(NEW)
    assert new.container_id != old.container_id and old.container_id in engine.removed
    assert new.name == "envd-p-bbbbbbbbbbbb"


def test_new_image_never_cuts_a_running_command() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.execs_running[old.container_id] = 1
    new = warm.ensure(NEW)
    assert old.container_id not in engine.removed and old.retiring
    assert warm.get("p") is new and [w.retiring for w in warm.all()] == [False, True]
    assert warm.reap() == []  # still busy
    engine.execs_running[old.container_id] = 0
    old.last_used_at -= HANDOFF_GRACE_S
    assert warm.reap() == [old] and old.container_id in engine.removed
    assert warm.all() == [new]


def test_a_container_just_handed_out_is_not_removed_under_its_caller() -> None:
    """Its `docker exec` may not have started yet: retired, and reaped only after the grace."""
    warm, engine = make()
    old = warm.ensure(REQ)
    warm.ensure(NEW)
    assert old.retiring and old.container_id not in engine.removed
    assert warm.reap(now=old.last_used_at + 1) == []
    assert warm.reap(now=old.last_used_at + HANDOFF_GRACE_S + 1) == [old]


def test_a_retiring_container_comes_back_when_its_image_does() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.execs_running[old.container_id] = 1
    warm.ensure(NEW)
    back = warm.ensure(REQ)  # e.g. envd.lock reverted: no new container, no name clash
    assert back is old and not back.retiring and len(engine.started) == 2


def test_a_name_held_by_a_busy_container_is_not_taken() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.execs_running[old.container_id] = 1
    warm.ensure(replace(REQ, ports=(8888,)))  # same image, other ports: a second container
    names = sorted(w.name for w in warm.all())
    assert names[0] == old.name and names[1].startswith(old.name + "-")
    assert old.container_id not in engine.removed


def test_other_ports_or_gpus_replace_the_container() -> None:
    warm, _ = make()
    a = warm.ensure(REQ)
    b = warm.ensure(replace(REQ, ports=(8888,)))
    c = warm.ensure(replace(REQ, ports=(8888,), device_requests=ALL_GPUS))
    d = warm.ensure(replace(REQ, ports=(8888,), device_requests=GPU_1))
    assert len({a.container_id, b.container_id, c.container_id, d.container_id}) == 4
    assert warm.ensure(replace(REQ, ports=(8888,), device_requests=GPU_1)) is d
    assert gpu_key(ALL_GPUS) == "all" and gpu_key(GPU_1) == "1" and gpu_key(()) == ""


def test_a_project_folder_made_anew_under_its_path_replaces_the_container() -> None:
    """Deleted and cloned again (or moved away and another put there): the old container
    binds the old folder, so it is retired and a new one binds the folder there now; after a
    daemon restart the folder it binds is known from its label."""
    warm, engine = make()
    a = warm.ensure(replace(REQ, workspace="2049:100"))
    assert engine.containers[a.container_id].labels["envd.workspace"] == "2049:100"
    assert warm.ensure(replace(REQ, workspace="2049:100")) is a
    b = warm.ensure(replace(REQ, workspace="2049:200"))
    assert b.container_id != a.container_id and b.workspace == "2049:200"
    assert warm.ensure(replace(REQ, workspace="")) is b  # unknown (no folder): reused
    fresh, _ = make(engine=engine)
    fresh.rediscover()
    assert fresh.ensure(replace(REQ, workspace="2049:200")).container_id == b.container_id
    assert fresh.ensure(replace(REQ, workspace="2049:300")).container_id != b.container_id


def test_a_dead_container_is_replaced() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.kill(old.container_id)
    new = warm.ensure(REQ)
    assert new.container_id != old.container_id and new.status == "running"
    assert old.container_id in engine.removed and warm.all() == [new]
    assert ("container.stopped", "died") in warm.events.kinds  # type: ignore[attr-defined]


def test_a_leftover_with_our_name_is_replaced() -> None:
    engine = FakeEngine()
    name = warm_container("p", REQ.image_id)
    engine.containers["x" * 64] = ContainerInfo(
        "x" * 64, name, REQ.image, "exited", {"envd.owner": OWNER}
    )
    warm, _ = make(engine=engine)
    assert warm.ensure(REQ).name == name and "x" * 64 in engine.removed


def test_another_daemons_container_is_never_touched() -> None:
    engine = FakeEngine()
    theirs, _ = make(engine=engine, owner="owner-b")
    t = theirs.ensure(REQ)
    mine, _ = make(engine=engine)
    mine.rediscover()
    assert mine.all() == []
    m = mine.ensure(REQ)  # same project name and image: a different container name
    assert m.container_id != t.container_id and t.container_id not in engine.removed
    assert mine.stop(None) == [m] and t.container_id in engine.containers


def test_a_container_that_will_not_run_is_a_container_error() -> None:
    class Dying(FakeEngine):
        def start_container(self, name, image, command, **kw):  # type: ignore[no-untyped-def]
            info = super().start_container(name, image, command, **kw)
            self.kill(info.id)
            return self.containers[info.id]

    warm, engine = make(engine=Dying())
    try:
        warm.ensure(REQ)
    except Exception as exc:
        assert type(exc).__name__ == "ContainerError" and exc.exit_code == 10  # type: ignore[attr-defined]
    else:
        raise AssertionError("no ContainerError")
    assert engine.containers == {} and warm.all() == []


def test_a_failed_start_leaves_nothing_and_suggests_the_port() -> None:
    from envd.errors import ContainerError

    class PortTaken(FakeEngine):
        def start_container(self, name, image, command, **kw):  # type: ignore[no-untyped-def]
            super().start_container(name, image, command, **kw)  # created, never started
            raise ContainerError(f"could not start container {name}: port is already allocated")

    warm, engine = make(engine=PortTaken())
    try:
        warm.ensure(replace(REQ, ports=(8888,)))
    except ContainerError as exc:
        assert "8888" in (exc.hint or "") and "envctl ps" in (exc.hint or "")
    else:
        raise AssertionError("no ContainerError")
    assert engine.containers == {} and warm.all() == []


# ---------------------------------------------------------------- the reaper


def test_idle_containers_are_reaped_unless_busy() -> None:
    warm, engine = make(timeout=60)
    w = warm.ensure(REQ)
    t0 = w.last_used_at
    assert warm.reap(now=t0 + 30) == []  # not idle long enough
    engine.execs_running[w.container_id] = 1
    assert warm.reap(now=t0 + 120) == []  # idle long enough, but a command runs
    assert w.last_used_at == t0 + 120  # busy counts as used: idle time restarts from here
    engine.execs_running[w.container_id] = 0
    assert warm.reap(now=t0 + 150) == []
    assert warm.reap(now=t0 + 200) == [w] and warm.all() == []
    assert w.container_id in engine.removed
    assert ("container.stopped", "idle for 80s") in warm.events.kinds  # type: ignore[attr-defined]


def test_zero_timeout_never_reaps() -> None:
    warm, _ = make(timeout=0)
    w = warm.ensure(REQ)
    assert warm.reap(now=w.last_used_at + 10**6) == []


def test_the_reaper_drops_dead_containers() -> None:
    warm, engine = make()
    w = warm.ensure(REQ)
    engine.kill(w.container_id)
    assert warm.refresh()[0].status == "exited"
    assert warm.reap() == [w] and warm.all() == []


def test_touch_postpones_expiry() -> None:
    warm, _ = make(timeout=60)
    w = warm.ensure(REQ)
    w.last_used_at -= 100
    warm.touch("p")
    assert warm.reap() == []


def test_reaper_interval_follows_the_timeout() -> None:
    assert make(timeout=1800)[0].interval() == 30
    assert make(timeout=10)[0].interval() == 5
    assert make(timeout=1)[0].interval() == 1
    assert make(timeout=0)[0].interval() == 30


def test_reaper_skips_a_project_being_started() -> None:
    warm, _ = make(timeout=1)
    w = warm.ensure(REQ)
    with warm._holding("p"):  # an ensure in progress holds the project's lock
        assert warm.reap(now=w.last_used_at + 100) == []
    assert warm.reap(now=w.last_used_at + 100) == [w]


def test_reaper_thread_runs_and_stops() -> None:
    warm, _ = make(timeout=1)
    w = warm.ensure(REQ)
    w.last_used_at -= 100
    done = threading.Event()
    original = warm.reap

    def reap(now: float | None = None) -> list:  # type: ignore[type-arg]
        out = original(now)
        done.set()
        return out

    warm.reap = reap  # type: ignore[method-assign]
    warm.start_reaper()
    warm.wake()
    assert done.wait(5) and warm.all() == []
    warm.close()


# ---------------------------------------------------------------- restart, users, stop


def test_rediscover_adopts_our_running_containers() -> None:
    warm, engine = make()
    w = warm.ensure(replace(REQ, ports=(8888,), device_requests=GPU_1))
    dead = warm.ensure(WarmRequest("q", "envd/q:ccc", "sha256:" + "c" * 64, "/src/q"))
    engine.kill(dead.container_id)
    fresh, _ = make(engine=engine)
    fresh.rediscover()
    fresh.rediscover()  # twice is harmless
    adopted = fresh.all()
    assert [x.container_id for x in adopted] == [w.container_id]
    assert adopted[0].ports == (8888,) and adopted[0].gpus == "1" and adopted[0].image == REQ.image
    assert dead.container_id in engine.removed
    # the adopted container is reused as is
    assert fresh.ensure(replace(REQ, ports=(8888,), device_requests=GPU_1)) is adopted[0]
    assert len(engine.started) == 2


def test_user_is_set_up_once() -> None:
    warm, engine = make()
    w = warm.ensure(REQ)
    warm.ensure_user(w, 1000, 1000, "ada", "/opt/venv")
    warm.ensure_user(w, 1000, 1000, "ada", "/opt/venv")
    assert len(engine.exec_calls) == 1 and engine.exec_calls[0][2] == "0"
    script = user_setup_script(1000, 1000, "ada", "/opt/venv")
    assert "ada:x:1000:1000::/home/ada" in script and "chown 1000:1000 /home/ada" in script


def test_user_setup_failure_is_a_container_error() -> None:
    class Failing(FakeEngine):
        def exec_capture(self, container, argv, user=""):  # type: ignore[no-untyped-def]
            from envd.gateways.engine import RunResult

            return RunResult(1, "sh: /etc/passwd: Read-only file system")

    warm, _ = make(engine=Failing())
    w = warm.ensure(REQ)
    try:
        warm.ensure_user(w, 1000, 1000, "ada", "/opt/venv")
    except Exception as exc:
        assert "Read-only file system" in str(exc) and exc.exit_code == 10  # type: ignore[attr-defined]
    else:
        raise AssertionError("no error")


def test_stop_one_and_all() -> None:
    warm, engine = make()
    warm.ensure(REQ)
    q = warm.ensure(WarmRequest("q", "envd/q:ccc", "sha256:" + "c" * 64, "/src/q"))
    assert [w.project for w in warm.stop("p")] == ["p"] and warm.all() == [q]
    assert warm.stop("p") == []
    warm.ensure(REQ)
    assert {w.project for w in warm.stop(None)} == {"p", "q"} and engine.containers == {}


def test_stop_takes_retiring_containers_too() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.execs_running[old.container_id] = 1
    warm.ensure(NEW)
    assert len(warm.stop("p")) == 2 and engine.containers == {}


# ---------------------------------------------------------------- the agent as first process


class AgentEngine(FakeEngine):
    """Starts the real envd agent on this host where a container would run it (or, for an
    image without python3, writes the marker the entrypoint writes)."""

    def __init__(self, python: bool = True) -> None:
        super().__init__()
        self.python = python
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.started_as: list[dict[str, Any]] = []
        self.inspections = 0

    def start_container_as(
        self, user, name, image, command, *, entrypoint=(), mounts=(), labels=None, **kw
    ):  # type: ignore[no-untyped-def]
        info = self.start_container(name, image, command, labels=labels)
        self.started_as.append(
            {"user": user, "entrypoint": list(entrypoint), "mounts": list(mounts), "cmd": command}
        )
        folder = next(m.source for m in mounts if m.target == AGENT_SOCKET_DIR)
        if self.python:
            sock = os.path.join(folder, AGENT_SOCKET)
            self.agents[info.id] = subprocess.Popen(
                [sys.executable, "-I", "-S", str(AGENT_SCRIPT), sock, "0.3"]
            )
        else:
            Path(folder, NO_AGENT).touch()
        return info

    def container_env(self, ref: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "FROM_IMAGE": "yes"}

    def inspect_container(self, ref: str) -> ContainerInfo | None:
        self.inspections += 1
        return super().inspect_container(ref)

    def remove_container(self, ref: str) -> None:
        info = super().inspect_container(ref)
        agent = self.agents.pop(info.id, None) if info else None
        if agent is not None:
            agent.terminate()
            agent.wait(5)
        super().remove_container(ref)

    def stop_all(self) -> None:
        for agent in self.agents.values():
            agent.kill()
            agent.wait()


@pytest.fixture
def agents_home() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="envd-w-", dir="/tmp"))  # sun_path: 108 bytes
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def with_agents(folder: Path, engine: AgentEngine) -> WarmContainers:
    return WarmContainers(
        engine, RecordingBus(), Config_(1800), OWNER, Agents(folder / "agents", 1234, 5678)
    )


def test_the_agent_is_the_first_process_mounted_read_only(agents_home: Path) -> None:
    engine = AgentEngine()
    warm = with_agents(agents_home, engine)
    try:
        w = warm.ensure(REQ)
        started = engine.started_as[0]
        assert started["user"] == "1234:5678" and started["cmd"] == ["sleep", "infinity"]
        assert started["entrypoint"] == agent_entrypoint()
        assert f"exec python3 -I -S {AGENT_FILE} {AGENT_SOCKET_DIR}/{AGENT_SOCKET}" in " ".join(
            started["entrypoint"]
        )
        mounts = {m.target: m for m in started["mounts"]}
        assert mounts[AGENT_FILE].source == str(AGENT_SCRIPT) and mounts[AGENT_FILE].read_only
        folder = Path(mounts[AGENT_SOCKET_DIR].source)
        assert folder.parent == agents_home / "agents"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert w.agent == str(folder / AGENT_SOCKET) and Path(w.agent).is_socket()
        assert w.agent_user == "1234:5678" and w.env["FROM_IMAGE"] == "yes"
        labels = engine.containers[w.container_id].labels
        assert labels["envd.agent"] == folder.name and labels["envd.agent-user"] == "1234:5678"
        before = engine.inspections
        assert warm.ensure(REQ) is w and engine.inspections == before  # the agent answered
        warm.stop("p")
        assert not folder.exists()
    finally:
        engine.stop_all()


def test_an_image_without_python_gets_no_agent(agents_home: Path) -> None:
    engine = AgentEngine(python=False)
    warm = with_agents(agents_home, engine)
    w = warm.ensure(REQ)
    assert w.agent == "" and w.agent_user == "" and w.status == "running"
    assert list((agents_home / "agents").iterdir()) == []  # its folder is gone


def test_a_dead_agent_means_a_dead_container(agents_home: Path) -> None:
    engine = AgentEngine()
    warm = with_agents(agents_home, engine)
    try:
        w = warm.ensure(REQ)
        engine.agents[w.container_id].kill()
        engine.agents[w.container_id].wait()
        engine.kill(w.container_id)
        again = warm.ensure(REQ)
        assert again.container_id != w.container_id and again.agent
    finally:
        engine.stop_all()


def test_a_command_in_the_agent_keeps_a_replaced_container(agents_home: Path) -> None:
    engine = AgentEngine()
    warm = with_agents(agents_home, engine)
    try:
        w = warm.ensure(REQ)
        command = run_in_agent(w.agent, ["sleep", "30"], "/", {"PATH": "/usr/bin:/bin"})
        w.last_used_at -= HANDOFF_GRACE_S + 1  # handed out long ago: only the agent says busy
        new = warm.ensure(NEW)
        assert new is not w and w.retiring and w.container_id in engine.containers
        assert warm.reap(now=w.last_used_at + 2 * HANDOFF_GRACE_S) == []
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=5) == 128 + signal.SIGTERM
        assert warm.reap(now=time.time() + 2 * HANDOFF_GRACE_S) == [w]
    finally:
        engine.stop_all()


def test_rediscover_adopts_the_agent(agents_home: Path) -> None:
    engine = AgentEngine()
    first = with_agents(agents_home, engine)
    try:
        w = first.ensure(REQ)
        second = with_agents(agents_home, engine)
        second.rediscover()
        (adopted,) = second.all()
        assert adopted.agent == w.agent and adopted.agent_user == "1234:5678"
        assert adopted.env["FROM_IMAGE"] == "yes"
    finally:
        engine.stop_all()


def test_a_home_too_deep_for_a_socket_path_gets_no_agent(agents_home: Path) -> None:
    engine = AgentEngine()
    deep = agents_home / ("d" * 100)
    warm = with_agents(deep, engine)
    w = warm.ensure(REQ)
    assert w.agent == "" and engine.started_as == [] and len(engine.started) == 1


def test_a_warm_container_starts_from_the_recorded_image_id_not_its_tag() -> None:
    """A tag can be moved to an image envd never verified (F3): the container is created
    from the ID the store recorded, whatever the tag points at now."""
    warm, engine = make()
    started = warm.ensure(REQ)
    info = engine.containers[started.container_id]
    assert info.image == REQ.image_id and info.labels["envd.image"] == REQ.image


def test_ps_asks_the_engine_nothing_while_agents_answer(agents_home: Path) -> None:
    engine = AgentEngine()
    warm = with_agents(agents_home, engine)
    try:
        w = warm.ensure(REQ)
        before = engine.inspections
        assert [x.status for x in warm.refresh()] == ["running"]
        assert engine.inspections == before  # answered from memory: the agent listens
        engine.agents[w.container_id].kill()  # the container died: its agent with it
        engine.agents[w.container_id].wait()
        engine.kill(w.container_id)
        assert [x.status for x in warm.refresh()] == ["exited"]
        assert engine.inspections == before + 1
    finally:
        engine.stop_all()
