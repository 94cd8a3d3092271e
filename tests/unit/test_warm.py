"""Warm-container decisions with a fake engine: reuse, replace, restart the dead, reap."""

from __future__ import annotations

from envd.config import Config
from envd.events import EventBus
from envd.warm import WarmContainers, WarmRequest, container_name, user_setup_script
from tests.fakes.engine import FakeEngine


def make(timeout: float = 1800) -> tuple[WarmContainers, FakeEngine]:
    engine = FakeEngine()
    config = Config(idle_timeout=timeout)
    return WarmContainers(engine, EventBus(), lambda: config), engine


REQ = WarmRequest("p", "envd/p:aaa", "sha256:" + "a" * 64, "/src/p")


def test_second_ensure_reuses_the_container() -> None:
    warm, engine = make()
    first = warm.ensure(REQ)
    assert warm.ensure(REQ) is first and len(engine.started) == 1
    assert first.name == container_name("p", REQ.image_id) == "envd-p-aaaaaaaaaaaa"


def test_new_image_replaces_an_idle_container() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    new = warm.ensure(WarmRequest("p", "envd/p:bbb", "sha256:" + "b" * 64, "/src/p"))
    assert new.container_id != old.container_id and old.container_id in engine.removed


def test_new_image_never_cuts_a_running_command() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.execs_running[old.container_id] = 1
    warm.ensure(WarmRequest("p", "envd/p:bbb", "sha256:" + "b" * 64, "/src/p"))
    assert old.container_id not in engine.removed and old.retiring
    engine.execs_running[old.container_id] = 0
    assert warm.reap() == [old] and old.container_id in engine.removed


def test_a_dead_container_is_replaced() -> None:
    warm, engine = make()
    old = warm.ensure(REQ)
    engine.kill(old.container_id)
    new = warm.ensure(REQ)
    assert new.container_id != old.container_id and new.status == "running"


def test_idle_containers_are_reaped_unless_busy() -> None:
    warm, engine = make(timeout=60)
    w = warm.ensure(REQ)
    engine.execs_running[w.container_id] = 1
    assert warm.reap(now=w.last_used_at + 120) == []
    engine.execs_running[w.container_id] = 0
    assert warm.reap(now=w.last_used_at + 30) == []
    assert warm.reap(now=w.last_used_at + 120) == [w] and warm.all() == []


def test_rediscover_adopts_running_containers() -> None:
    warm, engine = make()
    w = warm.ensure(REQ)
    fresh, _ = make()
    fresh.engine = engine
    fresh.rediscover()
    assert [x.container_id for x in fresh.all()] == [w.container_id]


def test_user_is_set_up_once() -> None:
    warm, engine = make()
    w = warm.ensure(REQ)
    warm.ensure_user(w, 1000, 1000, "ada", "/opt/venv")
    warm.ensure_user(w, 1000, 1000, "ada", "/opt/venv")
    assert len(engine.exec_calls) == 1 and engine.exec_calls[0][2] == "0"
    script = user_setup_script(1000, 1000, "ada", "/opt/venv")
    assert "ada:x:1000:1000::/home/ada" in script and "chown 1000:1000 /home/ada" in script


def test_stop_all() -> None:
    warm, engine = make()
    warm.ensure(REQ)
    warm.ensure(WarmRequest("q", "envd/q:ccc", "sha256:" + "c" * 64, "/src/q"))
    assert {w.project for w in warm.stop(None)} == {"p", "q"} and engine.containers == {}
