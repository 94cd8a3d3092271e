"""Warm containers: one running container per entered project, so `enter` is a `docker exec`.

The registry lives in memory and is rebuilt from container labels when the daemon starts, so a
restart finds its warm containers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from envd.config import Config
from envd.errors import ContainerError
from envd.events import EventBus
from envd.gateways.engine import ContainerInfo, Mount, RunResult
from envd.plan import IDLE_CMD, WORKDIR

ROLE = "warm"


class ContainerEngine(Protocol):
    def start_container(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = ...,
        mounts: Sequence[Mount] = ...,
        labels: Mapping[str, str] | None = ...,
        workdir: str = ...,
        device_requests: Sequence[Mapping[str, Any]] = ...,
        ports: Sequence[int] = ...,
    ) -> ContainerInfo: ...

    def inspect_container(self, ref: str) -> ContainerInfo | None: ...

    def list_containers(self, label: str = ...) -> list[ContainerInfo]: ...

    def remove_container(self, ref: str) -> None: ...

    def exec_capture(self, container: str, argv: Sequence[str], user: str = ...) -> RunResult: ...

    def running_execs(self, container: str) -> int: ...


@dataclass
class Warm:
    project: str
    container_id: str
    name: str
    image: str
    started_at: float
    last_used_at: float
    users: set[int] = field(default_factory=set)  # uids with a passwd entry already
    retiring: bool = False  # replaced by a newer image; removed once its commands finish
    status: str = "running"


@dataclass(frozen=True)
class WarmRequest:
    project: str
    image: str
    image_id: str
    project_dir: str
    ports: tuple[int, ...] = ()
    device_requests: tuple[Mapping[str, Any], ...] = ()


def container_name(project: str, image_id: str) -> str:
    return f"envd-{project}-{image_id.removeprefix('sha256:')[:12]}"


def user_setup_script(uid: int, gid: int, name: str, venv: str) -> str:
    """Run as root once per user: a passwd/group entry, a HOME, and the venv on login PATHs."""
    home = "/root" if uid == 0 else f"/home/{name}"
    return (
        "set -e; "
        f"grep -q '^[^:]*:[^:]*:{uid}:' /etc/passwd || "
        f"echo '{name}:x:{uid}:{gid}::{home}:/bin/sh' >> /etc/passwd; "
        f"grep -q '^[^:]*:[^:]*:{gid}:' /etc/group || echo '{name}:x:{gid}:' >> /etc/group; "
        f"mkdir -p {home} && chown {uid}:{gid} {home}; "
        "mkdir -p /etc/profile.d; "
        f"printf 'export VIRTUAL_ENV={venv}\\nexport PATH={venv}/bin:$PATH\\n' "
        "> /etc/profile.d/envd.sh"
    )


class WarmContainers:
    def __init__(
        self, engine: ContainerEngine, events: EventBus, config: Callable[[], Config]
    ) -> None:
        self.engine = engine
        self.events = events
        self.config = config  # read each time: `envctl config` may change it
        self._by_project: dict[str, Warm] = {}
        self._retiring: list[Warm] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()

    # ------------------------------------------------------------ discovery and listing

    def rediscover(self) -> None:
        """Adopt the warm containers a previous daemon left running (found by label)."""
        now = time.time()
        for c in self.engine.list_containers(f"envd.role={ROLE}"):
            project = c.labels.get("envd.project", "")
            if not project:
                continue
            if c.status != "running":
                self.engine.remove_container(c.id)
                continue
            with self._lock:
                current = self._by_project.get(project)
                warm = Warm(project, c.id, c.name, c.labels.get("envd.image", c.image), now, now)
                if current is None:
                    self._by_project[project] = warm
                else:
                    warm.retiring = True
                    self._retiring.append(warm)

    def all(self) -> list[Warm]:
        with self._lock:
            return sorted(self._by_project.values(), key=lambda w: w.project) + list(self._retiring)

    def get(self, project: str) -> Warm | None:
        with self._lock:
            return self._by_project.get(project)

    # ------------------------------------------------------------ ensure

    def ensure(self, request: WarmRequest) -> Warm:
        """The project's running container for `request.image`, started or replaced if needed."""
        with self._lock:
            warm = self._by_project.get(request.project)
            if warm is not None and warm.image == request.image:
                info = self.engine.inspect_container(warm.container_id)
                if info is not None and info.status == "running":
                    warm.last_used_at = time.time()
                    return warm
                # It died behind our back: forget it and start a fresh one.
                self.engine.remove_container(warm.container_id)
                self._by_project.pop(request.project, None)
                self.events.publish("container.died", request.project, warm.container_id[:12])
            elif warm is not None:
                self._retire(warm)
            return self._start(request)

    def _retire(self, warm: Warm) -> None:
        """Replace without cutting a running command short."""
        self._by_project.pop(warm.project, None)
        if self.engine.running_execs(warm.container_id):
            warm.retiring = True
            self._retiring.append(warm)
        else:
            self._remove(warm, "replaced by a newer image")

    def _start(self, request: WarmRequest) -> Warm:
        name = container_name(request.project, request.image_id)
        stale = self.engine.inspect_container(name)
        if stale is not None:  # a leftover with our name (e.g. stopped): replace it
            self.engine.remove_container(stale.id)
        info = self.engine.start_container(
            name,
            request.image,
            list(IDLE_CMD),
            mounts=[Mount(request.project_dir, WORKDIR)],
            labels={
                "envd.role": ROLE,
                "envd.project": request.project,
                "envd.image": request.image,
            },
            workdir=WORKDIR,
            device_requests=request.device_requests,
            ports=request.ports,
        )
        if info.status != "running":
            self.engine.remove_container(info.id)
            raise ContainerError(
                f"the container for {request.project} stopped right after it started",
                hint=f"`docker logs {name}` may say why; `envctl build` rebuilds the image",
            )
        now = time.time()
        warm = Warm(request.project, info.id, name, request.image, now, now)
        self._by_project[request.project] = warm
        self.events.publish("container.started", request.project, name, image=request.image)
        return warm

    def ensure_user(self, warm: Warm, uid: int, gid: int, name: str, venv: str) -> None:
        if uid in warm.users:
            return
        result = self.engine.exec_capture(
            warm.container_id, ["sh", "-c", user_setup_script(uid, gid, name, venv)], user="0"
        )
        if result.exit_code != 0:
            raise ContainerError(
                f"could not set up user {name} ({uid}:{gid}) in {warm.name}: "
                f"{result.output.strip()[-300:]}"
            )
        warm.users.add(uid)

    def touch(self, project: str) -> None:
        with self._lock:
            warm = self._by_project.get(project)
            if warm is not None:
                warm.last_used_at = time.time()

    # ------------------------------------------------------------ stopping

    def stop(self, project: str | None) -> list[Warm]:
        with self._lock:
            chosen = (
                list(self._by_project.values()) + self._retiring
                if project is None
                else [w for w in self.all() if w.project == project]
            )
            for warm in chosen:
                self._remove(warm, "stopped by request")
            return chosen

    def _remove(self, warm: Warm, reason: str) -> None:
        self.engine.remove_container(warm.container_id)
        warm.status = "stopped"
        if self._by_project.get(warm.project) is warm:
            del self._by_project[warm.project]
        if warm in self._retiring:
            self._retiring.remove(warm)
        self.events.publish("container.stopped", warm.project, warm.name, reason=reason)

    def reap(self, now: float | None = None) -> list[Warm]:
        """Stop idle containers and finished retiring ones; never one running a command."""
        now = time.time() if now is None else now
        timeout = self.config().idle_timeout
        removed = []
        with self._lock:
            for warm in list(self._retiring):
                if not self.engine.running_execs(warm.container_id):
                    self._remove(warm, "replaced by a newer image")
                    removed.append(warm)
            if timeout > 0:
                for warm in list(self._by_project.values()):
                    idle = now - warm.last_used_at
                    if idle > timeout and not self.engine.running_execs(warm.container_id):
                        self._remove(warm, f"idle for {idle:.0f}s")
                        removed.append(warm)
        return removed

    def start_reaper(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self._interval())
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.reap()
                except Exception:  # the engine may be briefly away; try again next round
                    continue

        threading.Thread(target=loop, daemon=True, name="reaper").start()

    def wake(self) -> None:
        """Re-read the settings now (after `envctl config idle_timeout ...`)."""
        self._wake.set()

    def _interval(self) -> float:
        timeout = self.config().idle_timeout
        return max(1.0, min(30.0, timeout / 2)) if timeout > 0 else 30.0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
