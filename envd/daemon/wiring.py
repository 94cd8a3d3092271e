"""Builds the daemon's object graph: the only module that constructs (and imports) services.

Each service gets exactly the collaborators it uses; nothing is wired afterwards by setting
another object's attributes. `Services` is what the gRPC servicer may call.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from envd import __version__
from envd.events import EventBus
from envd.gateways.engine import Engine, EngineInfo
from envd.gateways.nvml import nvml_from_env
from envd.gateways.store import Store
from envd.paths import Paths
from envd.services.builder import Builder
from envd.services.content import ContentHasher
from envd.services.entering import Entering
from envd.services.fingerprints import Fingerprints
from envd.services.host import HostProbe
from envd.services.images import Images
from envd.services.locker import Locker
from envd.services.projects import Projects
from envd.services.runs import Runs
from envd.services.settings import Settings
from envd.services.sharing import Sharing
from envd.services.steps import StepRunner
from envd.services.warm import Agents, WarmContainers
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


def agents_for(paths: Paths, engine: Engine) -> Agents | None:
    """Agents in warm containers, unless the engine is remote (its containers cannot mount our
    files or share our sockets), a fake, or ENVD_AGENT=0: then `enter` is a `docker exec`."""
    if type(engine) is not Engine or os.environ.get("ENVD_AGENT", "1") == "0":
        return None
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return None
    return Agents(paths.agents)


def owner_of(paths: Paths) -> str:
    """Which daemon made a container: several users' daemons may share one engine."""
    return hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]


def namespace_of(owner: str) -> str:
    """The repository prefix of this home's images and volumes: `envd-<owner>/churn:KEY`."""
    return f"envd-{owner[:12]}"


@dataclass(frozen=True)
class Services:
    """Everything the servicer calls, built once by `build_services`."""

    paths: Paths
    engine: Engine
    store: Store
    events: EventBus
    settings: Settings
    host: HostProbe
    projects: Projects
    locker: Locker
    images: Images
    steps: StepRunner
    warm: WarmContainers
    fingerprints: Fingerprints
    sharing: Sharing
    builder: Builder
    runs: Runs
    entering: Entering
    watcher: ProjectWatcher | None
    started: float

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            version=__version__,
            uptime_s=time.time() - self.started,
            socket_path=str(self.paths.socket),
            pid=os.getpid(),
            home=str(self.paths.home),
            log_path=str(self.paths.log_file),
            engine=self.engine.info(),
            projects=len(self.projects.list()),
        )

    def set_config(self, key: str, value: str) -> None:
        self.settings.set(key, value)
        self.warm.wake()  # the idle timeout may have changed

    def start(self) -> None:
        """Start background work (idle reaper, watcher); called once the socket is up."""
        if self.engine.info().reachable:
            self.steps.cleanup_orphans()
            self.warm.rediscover()
        self.warm.start_reaper()
        if self.watcher is not None:
            self.watcher.start()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.warm.close()
        self.events.close()
        self.store.close()


def build_services(paths: Paths, engine: Engine | None = None) -> Services:
    paths.home.mkdir(parents=True, exist_ok=True)
    paths.cache.mkdir(parents=True, exist_ok=True)
    owner = owner_of(paths)
    namespace = namespace_of(owner)
    store = Store(paths.database)
    events = EventBus()
    settings = Settings(paths.config_file, events)
    engine = engine or Engine(extra_labels=engine_labels_from_env())
    host = HostProbe(nvml_from_env)
    projects = Projects(store, events)
    locker = Locker(projects, engine, events, store, paths.cache)
    images = Images(store, engine, projects, namespace)
    steps = StepRunner(
        engine, store, owner, paths.cache / "debian", namespace, scratch=paths.home / "tmp"
    )
    warm = WarmContainers(
        engine, events, lambda: settings.current, owner, agents_for(paths, engine)
    )
    content = ContentHasher(engine, paths.cache / "layers")
    fingerprints = Fingerprints(engine, store, host, images, warm, content)
    sharing = Sharing(engine, projects, images, fingerprints, events, namespace)
    builder = Builder(
        projects, locker, images, steps, fingerprints, sharing, host, engine, events, namespace
    )
    runs = Runs(store)
    entering = Entering(projects, images, builder, warm, fingerprints, runs, host, engine, events)
    watcher = (
        ProjectWatcher(projects, images, builder, settings, events)
        if settings.current.watch
        else None
    )
    return Services(
        paths=paths,
        engine=engine,
        store=store,
        events=events,
        settings=settings,
        host=host,
        projects=projects,
        locker=locker,
        images=images,
        steps=steps,
        warm=warm,
        fingerprints=fingerprints,
        sharing=sharing,
        builder=builder,
        runs=runs,
        entering=entering,
        watcher=watcher,
        started=time.time(),
    )
