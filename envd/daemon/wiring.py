"""The daemon's service object: owns the store, the engine and the parts built on them.

The gRPC servicer only converts messages and calls methods reached from here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from envd import __version__
from envd.config import Config, load_config, save_config
from envd.events import EventBus
from envd.gateways.engine import Engine, EngineInfo
from envd.gateways.store import ProjectRow, Store
from envd.paths import Paths
from envd.services.projects import Projects
from envd.services.warm import WarmContainers

if TYPE_CHECKING:
    from envd.model.host import HostInfo
    from envd.services.builder import Builder, BuildOutcome
    from envd.services.entering import Entering
    from envd.services.fingerprints import Fingerprints
    from envd.services.locker import Locker
    from envd.services.sharing import Sharing
    from envd.services.watching import ProjectWatcher


@dataclass(frozen=True)
class DaemonStatus:
    version: str
    uptime_s: float
    socket_path: str
    pid: int
    home: str
    log_path: str
    engine: EngineInfo
    projects: int


def engine_labels_from_env() -> dict[str, str]:
    """ENVD_ENGINE_LABELS="k=v,k2=v2": extra labels on everything envd creates (tests use it)."""
    raw = os.environ.get("ENVD_ENGINE_LABELS", "")
    pairs = (item.split("=", 1) for item in raw.split(",") if "=" in item)
    return {k.strip(): v.strip() for k, v in pairs}


class App:
    def __init__(self, paths: Paths, engine: Engine | None = None) -> None:
        self.paths = paths
        self.started = time.time()
        # Which daemon made a container: several users' daemons may share one engine.
        self.owner = hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]
        paths.home.mkdir(parents=True, exist_ok=True)
        paths.cache.mkdir(parents=True, exist_ok=True)
        self.store = Store(paths.database)
        self.config = load_config(paths.config_file)
        self.events = EventBus()
        self.engine = engine or Engine(extra_labels=engine_labels_from_env())
        self.projects = Projects(self.store, self.events)
        self.warm = WarmContainers(self.engine, self.events, lambda: self.config, self.owner)
        self.watcher: ProjectWatcher | None = None
        self._host: HostInfo | None = None
        self._host_lock = threading.Lock()

    @cached_property
    def locker(self) -> Locker:
        from envd.services.locker import Locker

        return Locker(self)

    @cached_property
    def entering(self) -> Entering:
        from envd.services.entering import Entering

        return Entering(self)

    @cached_property
    def builder(self) -> Builder:
        from envd.services.builder import Builder

        builder = Builder(self)
        builder.metadata_labels = self.fingerprints.labels_before_metadata
        builder.after_build.append(lambda row, outcome: self._record_fingerprint(row, outcome))
        return builder

    @cached_property
    def sharing(self) -> Sharing:
        from envd.services.sharing import Sharing

        return Sharing(self)

    @cached_property
    def fingerprints(self) -> Fingerprints:
        from envd.services.fingerprints import Fingerprints

        return Fingerprints(self)

    def _record_fingerprint(self, row: ProjectRow, outcome: BuildOutcome) -> None:
        from envd.gateways.projectfiles import read_lock
        from envd.services.locker import lock_path

        lock = read_lock(lock_path(row))
        if lock is not None:
            self.fingerprints.record(outcome.image_id, lock)

    @property
    def host(self) -> HostInfo:
        """The host as read at start (NVML is read once; `refresh_host` reads it again)."""
        with self._host_lock:
            if self._host is None:
                self._host = self._detect_host()
            return self._host

    def refresh_host(self) -> HostInfo:
        with self._host_lock:
            self._host = self._detect_host()
            return self._host

    def _detect_host(self) -> HostInfo:
        from envd.gateways.nvml import nvml_from_env
        from envd.model.host import detect_host

        return detect_host(nvml_from_env())

    def fingerprint_hashes(self, image_id: str) -> tuple[str, str]:
        """(environment hash, host hash) recorded for an image; ("", "") when unknown."""
        rows = self.store.query(
            "SELECT environment_hash FROM fingerprints WHERE image_id=?", (image_id,)
        )
        env_hash = str(rows[0][0]) if rows else ""
        return env_hash, self.host_hash()

    def host_hash(self) -> str:
        from envd.services.fingerprints import host_section_hash

        return host_section_hash(self)

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            version=__version__,
            uptime_s=time.time() - self.started,
            socket_path=str(self.paths.socket),
            pid=os.getpid(),
            home=str(self.paths.home),
            log_path=str(self.paths.log_file),
            engine=self.engine.info(),
            projects=len(self.store.projects()),
        )

    def set_config(self, key: str, value: str) -> Config:
        self.config = self.config.with_value(key, value)
        save_config(self.paths.config_file, self.config)
        self.warm.wake()
        self.events.publish("config.changed", message=f"{key}={value}")
        return self.config

    def start(self) -> None:
        """Start background work (idle reaper, watcher); called once the socket is up."""
        if self.engine.info().reachable:
            self.builder.cleanup_orphans()
            self.warm.rediscover()
        self.warm.start_reaper()
        if self.config.watch:
            from envd.services.watching import ProjectWatcher

            self.watcher = ProjectWatcher(self)
            self.watcher.start()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.warm.close()
        self.events.close()
        self.store.close()


def cache_dir(app: App, name: str) -> Path:
    path = app.paths.cache / name
    path.mkdir(parents=True, exist_ok=True)
    return path
