"""Builds the daemon's object graph: the only module that constructs (and imports) services.

Each service gets exactly the collaborators it uses; nothing is wired afterwards by setting
another object's attributes. `Services` is what the gRPC servicer may call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass

from envd import __version__
from envd.events import EventBus
from envd.gateways.engine import Engine, EngineInfo
from envd.gateways.engine_files import EngineFiles
from envd.gateways.hashcache import HashCache
from envd.gateways.index import IndexPages
from envd.gateways.keptfiles import KeptFiles
from envd.gateways.mlflow import mlflow_sink
from envd.gateways.nvml import nvml_from_env
from envd.gateways.registry import RegistryClient
from envd.gateways.store import Store
from envd.model import names
from envd.paths import Paths, unusable_path
from envd.services.adoption import Adoption
from envd.services.agents import Agents
from envd.services.buildcache import BuildCache
from envd.services.builder import Builder
from envd.services.content import ContentHasher
from envd.services.entering import Entering
from envd.services.fingerprints import Fingerprints
from envd.services.host import HostProbe
from envd.services.images import EngineUsage, Images
from envd.services.locker import Locker
from envd.services.projects import Projects
from envd.services.projectsync import ProjectSync
from envd.services.reruns import Reruns
from envd.services.runs import Runs
from envd.services.runshare import RunSharing
from envd.services.settings import Settings
from envd.services.sharing import Sharing
from envd.services.steps import StepRunner
from envd.services.teamruns import TeamRuns
from envd.services.warm import WarmContainers
from envd.services.watching import ProjectWatcher

log = logging.getLogger(__name__)


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
    if engine.remote:  # DOCKER_HOST or the Docker context names another machine
        return None
    return Agents(paths.agents)


def remote_engine(engine: Engine) -> str:
    """The address of an engine that cannot see our files (tcp://, ssh://); "" if local."""
    if type(engine) is not Engine or not engine.remote:
        return ""
    return engine.endpoint.host


def project_sync_for(
    paths: Paths, engine: Engine, namespace: str, owner: str
) -> ProjectSync | None:
    """Syncing projects into volumes, on a remote engine only (a local one bind-mounts them)."""
    where = remote_engine(engine)
    if not where:
        return None
    return ProjectSync(EngineFiles(engine), paths.home / "sync", namespace, owner, where)


def owner_of(paths: Paths) -> str:
    """Which daemon made a container: several users' daemons may share one engine."""
    return hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]


def namespace_of(owner: str) -> str:
    """The repository prefix of this home's images and volumes: `envd-<owner>/churn:KEY`."""
    return names.namespace(owner)


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
    reruns: Reruns
    hashes: HashCache
    content: ContentHasher  # (its kept manifests are let go when idle: serve.Trimmer)
    watcher: ProjectWatcher | None
    started: float
    adoption: Adoption
    index: IndexPages
    runsharing: RunSharing
    teamruns: TeamRuns

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
        if key.startswith("cache[") and key.endswith("]") and value.strip():
            # a project's own cache: for a registered project, by its name (a path works too)
            key = f"cache[{self.projects.resolve_registered(key[len('cache[') : -1]).name}]"
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
        self.hashes.close()
        self.store.close()


CONFIG_HEADER = (
    "# envd's settings: `envctl config` shows them, `envctl config KEY VALUE` sets one\n"
)


def _private_config(paths: Paths) -> None:
    """config.yaml exists, 0600, before Settings reads it: its atomic rewrites keep the mode
    of the file they replace, so `envctl config KEY VALUE` never makes it world-readable."""
    try:
        fd = os.open(paths.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise unusable_path(paths.config_file, exc, paths.home) from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(CONFIG_HEADER)


def build_services(paths: Paths, engine: Engine | None = None) -> Services:
    paths.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    for cache in (paths.cache, paths.cache / "debian", paths.cache / "layers"):
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = owner_of(paths)
    namespace = namespace_of(owner)
    store = Store(paths.database)
    _private_config(paths)
    # One daemon per home (serve.py's instance lock): a build recorded as running was cut
    # short by a daemon that died (kill -9, a crash, the machine going down).
    for name in store.reset_interrupted_builds():
        log.warning("%s: its build was cut short when the daemon stopped; it is stale", name)
    events = EventBus()
    settings = Settings(paths.config_file, events)
    engine = engine or Engine(extra_labels=engine_labels_from_env())
    host = HostProbe(nvml_from_env, engine)
    projects = Projects(store, events)
    locker = Locker(projects, engine, events, store, paths.cache)
    images = Images(store, engine, projects, namespace, EngineUsage(engine))
    content = ContentHasher(engine, paths.cache / "layers")
    steps = StepRunner(
        engine,
        store,
        owner,
        paths.cache / "debian",
        namespace,
        scratch=paths.home / "tmp",
        content=content,
    )
    warm = WarmContainers(
        engine, events, lambda: settings.current, owner, agents_for(paths, engine)
    )
    fingerprints = Fingerprints(engine, store, host, images, warm, content)
    sharing = Sharing(
        engine,
        projects,
        images,
        fingerprints,
        events,
        namespace,
        scratch=paths.home / "tmp",
        registry=RegistryClient(purpose="share"),
    )
    build_cache = BuildCache(
        engine,
        store,
        steps,
        content,
        fingerprints,
        RegistryClient(),
        lambda: settings.current,
        events,
        namespace,
    )
    builder = Builder(
        projects,
        locker,
        images,
        steps,
        fingerprints,
        sharing,
        host,
        engine,
        events,
        namespace,
        cache=build_cache,
    )
    hashes = HashCache(paths.home / "hashes.db")  # created 0600
    mlflow = mlflow_sink(lambda: settings.current.mlflow_tracking_uri, store.fingerprint_document)
    kept = KeptFiles(paths.home / "runfiles")  # outputs and data, so old runs stay shareable
    runs = Runs(store, hashes, sinks=[mlflow], kept=kept)
    runsharing = RunSharing(
        runs,
        projects,
        sharing,
        engine,
        RegistryClient(purpose="share"),
        kept,
        paths.home / "shared-runs",
        paths.home / "tmp",
        lambda: f"https://github.com/envd/envd/daemon@{socket.gethostname() or 'localhost'}",
    )
    sync = project_sync_for(paths, engine, namespace, owner)
    entering = Entering(
        projects, images, builder, warm, fingerprints, runs, host, engine, events, sync
    )
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
        reruns=Reruns(runs, projects, images, builder, fingerprints),
        hashes=hashes,
        content=content,
        watcher=watcher,
        started=time.time(),
        adoption=Adoption(),
        index=IndexPages(),
        runsharing=runsharing,
        teamruns=TeamRuns(RegistryClient(purpose="share"), paths.home / "shared-runs"),
    )
