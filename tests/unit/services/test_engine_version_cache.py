"""Every run records a host hash, which holds the engine's version: it is read from the engine
at most once a minute (asking costs more than a warm enter), and never kept while unknown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from envd.gateways.engine import EngineInfo
from envd.gateways.store import Store
from envd.model.host import HostInfo
from envd.services import fingerprints as fingerprints_service
from envd.services.fingerprints import ENGINE_VERSION_TTL_S, Fingerprints


class Engine:
    def __init__(self) -> None:
        self.calls = 0
        self.version = "27.1.1"
        self.reachable = True

    def info(self) -> EngineInfo:
        self.calls += 1
        return EngineInfo(reachable=self.reachable, version=self.version if self.reachable else "")


class Host:
    host = HostInfo(
        cpu_model="test",
        arch="x86_64",
        cpu_count=2,
        memory_bytes=1 << 30,
        kernel="6.1",
        os="Debian",
        gpus=(),
        driver_version="",
        cuda_driver_version="",
        gpu_error="no NVIDIA GPU",
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(fingerprints_service.time, "monotonic", lambda: now[0])
    return now


def make(tmp_path: Path, engine: Engine) -> Fingerprints:
    none: Any = None
    return Fingerprints(engine, Store(tmp_path / "envd.db"), Host(), none, none, none)  # type: ignore[arg-type]


def test_the_version_is_read_once_a_minute(tmp_path: Path, clock: list[float]) -> None:
    engine = Engine()
    fps = make(tmp_path, engine)
    first = fps.host_hash()
    assert fps.host_hash() == first and engine.calls == 1
    engine.version = "28.0.0"  # upgraded
    clock[0] += ENGINE_VERSION_TTL_S / 2
    assert fps.host_hash() == first and engine.calls == 1
    clock[0] += ENGINE_VERSION_TTL_S
    assert fps.host_hash() != first and engine.calls == 2
    assert fps.host_section().engine_version == "28.0.0"


def test_an_engine_that_does_not_answer_is_asked_again(tmp_path: Path, clock: list[float]) -> None:
    engine = Engine()
    engine.reachable = False
    fps = make(tmp_path, engine)
    assert fps.engine_version() == ""
    engine.reachable = True
    assert fps.engine_version() == "27.1.1" and engine.calls == 2
