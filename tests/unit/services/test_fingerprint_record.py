"""A build whose every step was cached records its image's fingerprint without reading layer
bytes: the environment recorded for that image ID when it was made is used again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from envd.gateways.engine import EngineInfo
from envd.gateways.store import Store
from envd.services.content import ContentHasher
from envd.services.fingerprints import Fingerprints
from tests.unit.model.test_content import BASE, DEBIAN, FakeEngine, tar_bytes
from tests.unit.services.test_engine_version_cache import Host


class Engine(FakeEngine):
    def info(self) -> EngineInfo:
        return EngineInfo(reachable=True, version="28.0.0")


LOCK: Any = SimpleNamespace(
    inputs_hash="sha256:" + "a" * 64,
    base=SimpleNamespace(digest="sha256:" + "b" * 64),
    inputs=SimpleNamespace(env=()),
)


def fingerprints(engine: Engine, store: Store, cache: Path) -> Fingerprints:
    none: Any = None
    content = ContentHasher(engine, cache)  # type: ignore[arg-type]
    return Fingerprints(engine, store, Host(), none, none, content)  # type: ignore[arg-type]


def test_a_recorded_image_is_fingerprinted_again_without_reading_its_layers(
    tmp_path: Path,
) -> None:
    engine = Engine()
    engine.add("sha256:img", [tar_bytes(BASE), tar_bytes(DEBIAN)])
    engine.add("sha256:other", [tar_bytes(BASE)])
    store = Store(tmp_path / "envd.db")
    first = fingerprints(engine, store, tmp_path / "cache").record("sha256:img", LOCK)
    assert engine.reads == 1 and first.environment.content_hash.startswith("sha256:")

    # A new daemon whose layer cache is gone: the image ID's record is what it trusts.
    again = fingerprints(engine, store, tmp_path / "empty").record("sha256:img", LOCK)
    assert again.environment_hash == first.environment_hash
    assert engine.reads == 1

    # Another image ID has no record: its layers are read.
    other = fingerprints(engine, store, tmp_path / "empty").record("sha256:other", LOCK)
    assert engine.reads == 2
    assert other.environment_hash != first.environment_hash
