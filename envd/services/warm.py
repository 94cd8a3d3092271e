"""Warm containers: one running container per entered project, so `enter` is instant.

A warm container's first process is the envd agent (envd/agent/agent.py, bind-mounted read-only
at /run/envd/agent.py, never part of an image layer), run by the image's own `python3 -I -S`
as the daemon's uid:gid. That is the only uid the enter socket admits (SO_PEERCRED), so the
agent never needs root and never changes uid; a caller of another uid (gRPC Enter with its
uid) gets `docker exec -u UID:GID`, which the container still serves. The agent listens on
/run/envd/sock/agent.sock, bind-mounted from a 0700 folder $ENVD_HOME/run/agents/<key>/. An
image without a usable python3 (>= 3.9) runs `sleep infinity` instead and marks the folder
with `no-agent`: then `enter` is a `docker exec` (the fallback path), as for remote engines.

The registry lives in memory and is rebuilt from container labels when the daemon starts, so a
restart finds its warm containers again. Only containers labelled with this daemon's owner are
ever adopted, listed or removed: several daemons (users, test sessions) may share one engine.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from envd.config import Config
from envd.errors import ContainerError
from envd.events import EventBus
from envd.gateways.agent_client import AGENT_SCRIPT, agent_answers, running_commands
from envd.gateways.engine import ContainerInfo, Mount, RunResult
from envd.model.names import warm_container
from envd.model.plan import IDLE_CMD, WORKDIR
from envd.services.agents import (
    AGENT_FILE,
    AGENT_READY_S,
    AGENT_SOCKET,
    AGENT_SOCKET_DIR,
    NO_AGENT,
    Agents,
    agent_entrypoint,
    agent_key,
)
from envd.services.warmrecord import Warm, WarmRequest, fits

log = logging.getLogger(__name__)

ROLE = "warm"
REAP_EVERY_S = 30.0
# A container handed to a caller this recently may be about to get its `docker exec`: it is
# treated as busy even though the engine lists no exec in it yet.
HANDOFF_GRACE_S = 5.0


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

    def start_container_as(
        self,
        user: str,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        entrypoint: Sequence[str] = ...,
        mounts: Sequence[Mount] = ...,
        labels: Mapping[str, str] | None = ...,
        workdir: str = ...,
        device_requests: Sequence[Mapping[str, Any]] = ...,
        ports: Sequence[int] = ...,
    ) -> ContainerInfo: ...

    def container_env(self, ref: str) -> dict[str, str]: ...


def home_of(uid: int, name: str) -> str:
    """A container user's HOME, as user_setup_script makes it."""
    return "/root" if uid == 0 else f"/home/{name}"


def user_setup_script(uid: int, gid: int, name: str, venv: str) -> str:
    """Run as root once per user: a passwd/group entry, a HOME, and the venv on login PATHs.

    `name` must be a safe user name (see envd.services.entering.safe_user_name): it is not quoted.
    """
    home = home_of(uid, name)
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
    """The registry of warm containers, and the reaper that stops idle ones.

    One lock per project serialises what changes that project's container (ensure, stop, reap),
    so starting one project's container never holds up `enter` on another; `_lock` guards only
    the registry's dicts and is never held across an engine call.
    """

    def __init__(
        self,
        engine: ContainerEngine,
        events: EventBus,
        config: Callable[[], Config],
        owner: str = "",
        agents: Agents | None = None,
    ) -> None:
        self.engine = engine
        self.agents = agents  # None: no agent, `docker exec` only (remote engines, fakes)
        self.events = events
        self.config = config  # read each time: `envctl config` may change it
        self.owner = owner
        self._by_project: dict[str, Warm] = {}
        self._retiring: list[Warm] = []
        self._lock = threading.RLock()
        self._project_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reaper: threading.Thread | None = None

    def _labels(self, request: WarmRequest) -> dict[str, str]:
        labels = {
            "envd.role": ROLE,
            "envd.project": request.project,
            "envd.image": request.image,
            "envd.image-id": request.image_id,
            "envd.ports": ",".join(str(p) for p in request.ports),
            "envd.gpus": request.gpus,
            "envd.workspace": request.workspace,
        }
        if self.owner:
            labels["envd.owner"] = self.owner
        return labels

    def _ours(self, info: ContainerInfo) -> bool:
        return info.labels.get("envd.owner", "") == self.owner

    @contextmanager
    def _holding(self, project: str, wait: bool = True) -> Iterator[bool]:
        with self._lock:
            lock = self._project_locks.setdefault(project, threading.Lock())
        acquired = lock.acquire(blocking=wait)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()

    # ------------------------------------------------------------ discovery and listing

    def rediscover(self) -> None:
        """Adopt the warm containers a previous daemon of ours left running (found by label)."""
        now = time.time()
        for c in self.engine.list_containers(f"envd.role={ROLE}"):
            project = c.labels.get("envd.project", "")
            if not project or not self._ours(c):
                continue
            if c.status != "running":
                self.engine.remove_container(c.id)
                continue
            ports = tuple(int(p) for p in c.labels.get("envd.ports", "").split(",") if p.isdigit())
            agent, agent_user, env = self._agent_of(c)
            warm = Warm(
                project,
                c.id,
                c.name,
                c.labels.get("envd.image", c.image),
                now,
                now,
                ports=ports,
                gpus=c.labels.get("envd.gpus", ""),
                workspace=c.labels.get("envd.workspace", ""),
                agent=agent,
                agent_user=agent_user,
                env=env,
            )
            with self._lock:
                if any(w.container_id == c.id for w in self.all()):
                    continue
                if project not in self._by_project:
                    self._by_project[project] = warm
                else:  # two for one project: the next enter picks the one that fits
                    warm.retiring = True
                    self._retiring.append(warm)

    def all(self) -> list[Warm]:
        with self._lock:
            return sorted(self._by_project.values(), key=lambda w: w.project) + list(self._retiring)

    def get(self, project: str) -> Warm | None:
        with self._lock:
            return self._by_project.get(project)

    def refresh(self) -> list[Warm]:
        """all(), each status current (a container may have died meanwhile). The agent is the
        container's first process, so one whose agent answers runs: only others ask the engine."""
        warms = self.all()
        for warm in warms:
            if warm.status == "running" and warm.agent and agent_answers(warm.agent):
                continue
            info = self.engine.inspect_container(warm.container_id)
            if warm.status == "running" and (info is None or info.status != "running"):
                warm.status = info.status if info is not None else "gone"
        return warms

    # ------------------------------------------------------------ ensure

    def ensure(self, request: WarmRequest) -> Warm:
        """The project's running container for `request`, started or replaced if needed.

        Reused when image, ports and GPUs match and it still runs; a dead one is removed and
        started afresh; one that no longer fits is retired (kept until its commands finish).
        """
        with self._holding(request.project):
            warm = self.get(request.project)
            if warm is not None:
                if fits(warm, request):
                    if warm.agent and agent_answers(warm.agent):  # no engine call needed
                        warm.last_used_at = time.time()
                        return warm
                    info = self.engine.inspect_container(warm.container_id)
                    if info is not None and info.status == "running":
                        warm.last_used_at = time.time()
                        return warm
                    self._remove(warm, "died")
                else:
                    self._retire(warm)
            revived = self._revive(request)
            return revived if revived is not None else self._start(request)

    def _busy(self, warm: Warm, now: float) -> bool:
        """Running a command, or just handed to a caller whose `docker exec` may be starting."""
        recent = now - warm.last_used_at < HANDOFF_GRACE_S
        return recent or self._running(warm) > 0

    def _running(self, warm: Warm) -> int:
        """Commands running in it: `docker exec`s, and the agent's own."""
        running = self.engine.running_execs(warm.container_id)
        if warm.agent and not running:
            try:
                running = len(running_commands(warm.agent))
            except ContainerError:  # the agent is gone: the container is dying anyway
                pass
        return running

    def _agent_of(self, info: ContainerInfo) -> tuple[str, str, dict[str, str]]:
        """(socket, user, env) of an adopted container's agent; ("", "", {}) without one."""
        key = info.labels.get("envd.agent", "")
        if self.agents is None or not key:
            return "", "", {}
        sock = self.agents.folder / key / AGENT_SOCKET
        if not sock.exists():
            return "", "", {}
        return str(sock), info.labels.get("envd.agent-user", ""), self.engine.container_env(info.id)

    def _retire(self, warm: Warm) -> None:
        """Replace without cutting a running command short."""
        if self._busy(warm, time.time()):
            with self._lock:
                if self._by_project.get(warm.project) is warm:
                    del self._by_project[warm.project]
                warm.retiring = True
                self._retiring.append(warm)
        else:
            self._remove(warm, "replaced")

    def _revive(self, request: WarmRequest) -> Warm | None:
        """A retiring container that fits again (e.g. the lock was reverted) becomes current."""
        with self._lock:
            candidates = [
                w for w in self._retiring if w.project == request.project and fits(w, request)
            ]
        for warm in candidates:
            info = self.engine.inspect_container(warm.container_id)
            if info is None or info.status != "running":
                continue
            with self._lock:
                self._retiring.remove(warm)
                warm.retiring = False
                warm.last_used_at = time.time()
                self._by_project[request.project] = warm
            return warm
        return None

    def _free_name(self, request: WarmRequest) -> str:
        """envd-<project>-<image id>, unless that name is in use by a container to keep."""
        name = warm_container(request.project, request.image_id)
        existing = self.engine.inspect_container(name)
        if existing is None:
            return name
        mine = {w.container_id for w in self.all()}
        if self._ours(existing) and existing.id not in mine:
            self.engine.remove_container(existing.id)  # a leftover of ours, e.g. stopped
            return name
        # Still running someone's commands (ours retiring, or another daemon's): do not touch.
        return f"{name}-{secrets.token_hex(2)}"

    def _start(self, request: WarmRequest) -> Warm:
        # By the image ID the store recorded when the image was built or verified, never by
        # its tag: a tag can be moved (an archive, `docker tag`) to an image envd never checked.
        image = request.image_id or request.image
        name = self._free_name(request)
        mounts = [Mount(request.project_dir, WORKDIR)]
        if request.project_volume:  # a remote engine: see envd/services/projectsync.py
            mounts = [Mount(request.project_volume, WORKDIR, volume=True)]
        labels = self._labels(request)
        folder = None
        try:
            if self.agents is None or not self.agents.fits(name):
                info = self.engine.start_container(
                    name,
                    image,
                    list(IDLE_CMD),
                    mounts=mounts,
                    labels=labels,
                    workdir=WORKDIR,
                    device_requests=request.device_requests,
                    ports=request.ports,
                )
            else:
                key = agent_key(name)
                folder = self._agent_folder(key)
                mounts += [
                    Mount(str(AGENT_SCRIPT), AGENT_FILE, read_only=True),
                    Mount(str(folder), AGENT_SOCKET_DIR),
                ]
                labels |= {"envd.agent": key, "envd.agent-user": self.agents.user}
                info = self.engine.start_container_as(
                    self.agents.user,
                    name,
                    image,
                    list(IDLE_CMD),
                    entrypoint=agent_entrypoint(),
                    mounts=mounts,
                    labels=labels,
                    workdir=WORKDIR,
                    device_requests=request.device_requests,
                    ports=request.ports,
                )
        except ContainerError as exc:
            self.engine.remove_container(name)  # created but not started: leave nothing
            if request.ports and not exc.hint:
                ports = ", ".join(str(p) for p in request.ports)
                exc.hint = (
                    f"is a port of envd.yaml ({ports}) in use? `envctl ps` lists warm "
                    "environments; `envctl stop PROJECT` frees theirs"
                )
            raise
        agent = ""
        if folder is not None and info.status == "running":
            agent = self._wait_for_agent(info.id, folder)
            info = self.engine.inspect_container(info.id) or info
            if not agent:  # no usable python3 in the image: `docker exec` only
                why = "no usable python3" if (folder / NO_AGENT).exists() else "none listens"
                log.debug("no agent in %s (%s): enter falls back to `docker exec`", info.name, why)
                shutil.rmtree(folder, ignore_errors=True)
        if info.status != "running":
            self.engine.remove_container(info.id)
            raise ContainerError(
                f"the container for {request.project} stopped right after it started",
                hint=f"`envctl build {request.project}` rebuilds the image; "
                "`envctl daemon logs` may say more",
            )
        now = time.time()
        warm = Warm(
            request.project,
            info.id,
            name,
            request.image,
            now,
            now,
            ports=request.ports,
            gpus=request.gpus,
            workspace=request.workspace,
            agent=agent,
            agent_user=self.agents.user if agent and self.agents else "",
            env=self.engine.container_env(info.id) if agent else {},
        )
        with self._lock:
            self._by_project[request.project] = warm
        self.events.publish("container.started", request.project, name, image=request.image)
        return warm

    def _agent_folder(self, key: str) -> Path:
        """A fresh 0700 folder for one container's agent socket."""
        assert self.agents is not None
        self.agents.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = self.agents.folder / key
        shutil.rmtree(folder, ignore_errors=True)  # a leftover of a container of that name
        folder.mkdir(mode=0o700)
        folder.chmod(0o700)
        return folder

    def _wait_for_agent(self, container_id: str, folder: Path) -> str:
        """The agent's socket once it listens; "" when the image has none (or it died)."""
        sock, marker = folder / AGENT_SOCKET, folder / NO_AGENT
        deadline = time.monotonic() + AGENT_READY_S
        checked = time.monotonic()
        while time.monotonic() < deadline:
            if sock.exists():
                return str(sock)
            if marker.exists():
                return ""
            if time.monotonic() - checked > 0.5:  # a container that died says so only here
                checked = time.monotonic()
                info = self.engine.inspect_container(container_id)
                if info is None or info.status != "running":
                    return ""
            time.sleep(0.005)
        return ""

    def ensure_user(self, warm: Warm, uid: int, gid: int, name: str, venv: str) -> None:
        if uid in warm.users:
            return
        with self._holding(warm.project):
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
        """Stop one project's warm containers (retiring ones too), or all of them."""
        chosen = [w for w in self.all() if project is None or w.project == project]
        stopped = []
        for warm in chosen:
            with self._holding(warm.project):
                if any(w is warm for w in self.all()):
                    self._remove(warm, "stopped by request")
                    stopped.append(warm)
        return stopped

    def _remove(self, warm: Warm, reason: str) -> None:
        self.engine.remove_container(warm.container_id)
        if warm.agent:
            shutil.rmtree(Path(warm.agent).parent, ignore_errors=True)
        with self._lock:
            warm.status = "stopped"
            if self._by_project.get(warm.project) is warm:
                del self._by_project[warm.project]
            if warm in self._retiring:
                self._retiring.remove(warm)
        self.events.publish("container.stopped", warm.project, warm.name, reason=reason)

    def reap(self, now: float | None = None) -> list[Warm]:
        """Stop idle, dead and finished retiring containers; never one running a command.

        A busy container counts as used now, so its idle time starts when its commands end.
        A project whose container is being started or stopped right now is left for next time.
        """
        now = time.time() if now is None else now
        timeout = self.config().idle_timeout
        removed = []
        for warm in self.all():
            with self._holding(warm.project, wait=False) as held:
                if not held or not any(w is warm for w in self.all()):
                    continue
                info = self.engine.inspect_container(warm.container_id)
                if info is None or info.status != "running":
                    self._remove(warm, "died")
                    removed.append(warm)
                    continue
                if warm.retiring:
                    if self._busy(warm, now):
                        continue
                    reason = "replaced"
                else:
                    idle = now - warm.last_used_at
                    if timeout <= 0 or idle <= timeout:
                        continue
                    if self._running(warm):
                        warm.last_used_at = now  # in use: idle time starts when it ends
                        continue
                    reason = f"idle for {idle:.0f}s"
                self._remove(warm, reason)
                removed.append(warm)
        return removed

    def start_reaper(self) -> None:
        if self._reaper is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.interval())
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self.reap()
                except Exception:  # the engine may be briefly away; try again next round
                    continue

        self._reaper = threading.Thread(target=loop, daemon=True, name="reaper")
        self._reaper.start()

    def wake(self) -> None:
        """Re-read the settings now (after `envctl config idle_timeout ...`)."""
        self._wake.set()

    def interval(self) -> float:
        """How often the reaper looks: min(30 s, timeout / 2), at least once a second."""
        timeout = self.config().idle_timeout
        return max(1.0, min(REAP_EVERY_S, timeout / 2)) if timeout > 0 else REAP_EVERY_S

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
