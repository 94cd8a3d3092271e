"""Preparing an `enter`: the image, the warm container, the user, and the run record.

On the hot path (`fast`, envd/daemon/enter_socket.py) the daemon hands the caller's own fds to
the container's agent (on a remote engine, which has no agents: to a `docker exec` the daemon
runs, then brings the command's files back) and records the exit status itself. Otherwise
(gRPC Enter) the CLI runs `docker exec` itself, so the command's terminal, pipes and exit
status are the user's own; it reports the exit status back with FinishRun.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envd.errors import BuildFailed, ContainerError, EnvdError, NotFound, UsageError
from envd.events import EventBus
from envd.gateways.docker_cli import DockerExec, exec_argv
from envd.gateways.engine import Engine
from envd.gateways.files import folder_identity
from envd.gateways.git import commit_and_dirty
from envd.gateways.projectfiles import is_executable_file
from envd.gateways.store import ProjectRow, RunRow
from envd.model.cuda import check_driver_for_lock, check_host, parse_gpu_selection
from envd.model.plan import VENV, WORKDIR
from envd.model.spec import Spec
from envd.paths import run_pid_file
from envd.progress import Progress, Reporter
from envd.services.builder import Builder, BuildOutcome
from envd.services.fingerprints import Fingerprints
from envd.services.host import HostProbe
from envd.services.images import Images
from envd.services.projects import Projects, ProjectSnapshot
from envd.services.projectsync import ProjectSync
from envd.services.runs import ProvenanceFill, Runs
from envd.services.warm import WarmContainers, home_of
from envd.services.warmrecord import WarmRequest, fits

log = logging.getLogger(__name__)

SHELL = ("sh", "-c", "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi")
RUNTIME_TTL_S = 300.0  # how long the engine's runtime list is trusted
_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class EnterCall:
    project: str
    command: tuple[str, ...]
    gpus: str = ""
    tty: bool = False
    cwd: str = ""
    uid: int = 0
    gid: int = 0
    user_name: str = ""
    fast: bool = False  # for the agent (no pid-file wrapper); refused before a run is recorded
    term: str = ""  # the caller's TERM, for a tty on the fast path


class NoAgent(ContainerError):
    """The warm container has no agent for this caller: enter through `docker exec` instead."""


@dataclass(frozen=True)
class ExecPlan:
    container_id: str
    container_name: str
    user: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    run_id: str = ""
    started: bool = False
    agent_socket: str = ""  # fast path: the host path of the container's agent socket
    sync_id: str = ""  # a remote engine: FinishRun with it brings the command's files back
    check_image: str = ""  # to look up on the engine once the command has run (check_image)


def project_subdir(project_dir: str, cwd: str) -> str:
    """The caller's directory relative to the project ("" at its root or outside it)."""
    if cwd:
        try:
            rel = Path(cwd).resolve().relative_to(Path(project_dir).resolve())
        except ValueError:
            return ""
        return "" if str(rel) == "." else rel.as_posix()
    return ""


def workdir_for(project_dir: str, cwd: str) -> str:
    """The caller's directory inside the container when it is inside the project."""
    rel = project_subdir(project_dir, cwd)
    return f"{WORKDIR}/{rel}" if rel else WORKDIR


def safe_user_name(name: str, uid: int) -> str:
    """The caller's name when it is a plain POSIX user name, else user<uid>."""
    if uid == 0:
        return "root"
    return name if _USER_NAME.fullmatch(name) else f"user{uid}"


def wrap_for_signals(run_id: str, command: tuple[str, ...]) -> tuple[str, ...]:
    """Record the command's pid so the CLI can forward signals to it (when there is no TTY)."""
    return ("sh", "-c", f'echo $$ > {run_pid_file(run_id)}; exec "$@"', "sh", *command)


def through_start(project_dir: str, spec: Spec, command: tuple[str, ...]) -> tuple[str, ...]:
    """`command` as envd.yaml's `start:` runs it (`start CMD...`, as repo2docker's entrypoint
    does), from the project mounted at WORKDIR; `command` itself when there is none."""
    if spec.start is None:
        return command
    if not is_executable_file(project_dir, spec.start):
        raise UsageError(
            f"`start: {spec.start}` is not an executable file in the project",
            hint=f"make it executable: `chmod +x {spec.start}` (it runs as `{spec.start} CMD...`)",
        )
    return (f"{WORKDIR}/{spec.start}", *command)


def gpu_requests(selection: tuple[int, ...] | None) -> tuple[dict[str, Any], ...]:
    request: dict[str, Any] = {"Driver": "nvidia", "Capabilities": [["gpu"]]}
    if selection is None:
        request["Count"] = -1
    else:
        request["DeviceIDs"] = [str(i) for i in selection]
    return (request,)


class Entering:
    def __init__(
        self,
        projects: Projects,
        images: Images,
        builder: Builder,
        warm: WarmContainers,
        fingerprints: Fingerprints,
        runs: Runs,
        host: HostProbe,
        engine: Engine,
        events: EventBus,
        sync: ProjectSync | None = None,
    ) -> None:
        self._projects = projects
        self._images = images
        self._builder = builder
        self._warm = warm
        self._fingerprints = fingerprints
        self._runs = runs
        self._host = host
        self._engine = engine
        self._events = events
        self._sync = sync  # a remote engine: the project lives in a volume there
        self._syncing: dict[str, tuple[str, str, str, int, int, tuple[str, ...]]] = {}
        self._lock = threading.Lock()  # guards _syncing
        self._runtime: tuple[float, bool] | None = None  # (read at, engine has nvidia runtime)

    def prepare(self, call: EnterCall, progress: Reporter) -> ExecPlan:
        row = self._projects.resolve(call.project)
        spec = self._projects.spec(row)  # an invalid spec stops here, before any build
        command = through_start(row.path, spec, call.command or SHELL)  # (and a bad start)
        # The engine is asked only when the store records an image (a fresh project stays
        # fast): one removed behind envd's back (`docker rmi`) is built again.
        snapshot: ProjectSnapshot | None = None  # envd.lock read once with envd.yaml
        try:
            snapshot = self._projects.snapshot(row, spec)
        except EnvdError:
            pass  # (an unreadable envd.lock: the build below says why)
        image = self._images.current_image(row, check_engine=False, snapshot=snapshot)
        check_later = image is not None and self._held_by_warm(call, row.name, image)
        if image is not None and not check_later and not self._images.on_engine(image):
            image = None
        if image is None:
            self._check_host(row, spec, snapshot)  # (no build for an enter this host cannot run)
            image = self._build(row, progress)
            snapshot = None  # the build may have written envd.lock: read it again below
        request = self._request(row, spec, call, image)
        before = self._warm.get(row.name)
        volume_ensured = False
        if before is None or not fits(before, request):
            self._check_host(row, spec, snapshot)  # only before a container starts
            if self._sync is not None:  # (a warm container that fits holds it on the engine)
                self._sync.volume(row.name)
                volume_ensured = True
        try:
            warm = self._warm.ensure(request)
        except NotFound:
            if self._images.on_engine(image):
                raise
            # removed between the look above and the container's start: build, start again
            progress(Progress("build", f"{image} is no longer on the engine; building it again"))
            request = self._request(row, spec, call, self._build(row, progress))
            warm = self._warm.ensure(request)
        if self._sync is not None and not volume_ensured and warm is not before:
            self._sync.volume(row.name)  # started afresh after all: its volume is looked at
        image, image_id = request.image, request.image_id
        name = safe_user_name(call.user_name, call.uid)
        self._warm.ensure_user(warm, call.uid, call.gid, name, VENV)
        env = {"HOME": home_of(call.uid, name), "USER": name, "ENVD_PROJECT": row.name}
        remote = self._sync is not None
        if call.fast and remote:  # the daemon runs `docker exec` on the caller's fds
            env = {**({"TERM": call.term} if call.tty and call.term else {}), **env}
        elif call.fast:
            if not warm.agent or warm.agent_user != f"{call.uid}:{call.gid}":
                raise NoAgent(f"{warm.name} has no envd agent for uid {call.uid}")
            env = {**warm.env, **({"TERM": call.term} if call.tty and call.term else {}), **env}
        sync_id = self._sync_up(row, spec, warm.container_id, call, progress) if self._sync else ""
        run_id = ""
        argv = command
        if call.command:
            run_id = self._record_run(row, call, image_id, image, spec)
            env["ENVD_RUN_ID"] = run_id
            # The agent signals the command itself, and so does a terminal; `docker exec` on a
            # remote engine's fast path is signalled through the pid file, TTY or not.
            direct = (call.tty or call.fast) and not (call.fast and remote)
            argv = command if direct else wrap_for_signals(run_id, command)
        return ExecPlan(
            container_id=warm.container_id,
            container_name=warm.name,
            user=f"{call.uid}:{call.gid}",
            workdir=workdir_for(row.path, call.cwd),
            env=env,
            argv=tuple(argv),
            run_id=run_id,
            started=before is None or before.container_id != warm.container_id,
            agent_socket=warm.agent if call.fast else "",
            sync_id=sync_id,
            check_image=image if check_later else "",
        )

    # ------------------------------------------------------------ image

    def _held_by_warm(self, call: EnterCall, project: str, image: str) -> bool:
        """Whether the engine check of `image` may wait until the command has run: a warm
        container of it with an agent holds the image on the engine (by ID, even when
        `docker rmi -f` untags it), so the command can start there. The tag is looked up
        afterwards (ExecPlan.check_image, check_image): a removed one is forgotten then and
        the next enter builds it again. A container that died meanwhile is started afresh,
        and a missing image then found as before (NotFound in prepare)."""
        warm = self._warm.get(project)
        held = warm is not None and (bool(warm.agent) or self._sync is not None)
        return bool(call.fast and call.command and warm and held and warm.image == image)

    def _request(self, row: ProjectRow, spec: Spec, call: EnterCall, image: str) -> WarmRequest:
        return WarmRequest(
            row.name,
            image,
            self._images.image_id(image),
            row.path,
            ports=spec.ports,
            device_requests=self._devices(spec, call.gpus),
            project_volume=self._sync.volume_name(row.name) if self._sync else "",
            workspace="" if self._sync else folder_identity(row.path),
        )

    def up_to_date(self, ref: str) -> tuple[BuildOutcome, str] | None:
        """`envctl build REF` when it would run nothing (the enter socket's "build-check"):
        the build's outcome and its environment hash, read from the project's files now.
        None when a build has work to do or something to say (an error): build over gRPC."""
        try:
            row = self._projects.resolve(ref)
            outcome = self._builder.up_to_date(row)
        except EnvdError:
            return None
        if outcome is None:
            return None
        return outcome, self._fingerprints.hashes(outcome.image_id)[0]

    def _build(self, row: ProjectRow, progress: Reporter) -> str:
        progress(Progress("build", f"building {row.name} first"))
        try:
            return self._builder.build(row, progress).image
        except BuildFailed as exc:
            previous = self._projects.by_name(row.name)
            if previous and previous.image and self._images.recorded(previous.image):
                exc.hint = (
                    f"the previous image {previous.image} is untouched: undo the change to "
                    f"envd.yaml (and envd.lock) and `envctl enter {row.name}` uses it again "
                    "with no build; or fix envd.yaml and enter again"
                )
            raise

    # ------------------------------------------------------------ a remote engine's volume

    def _sync_up(
        self, row: ProjectRow, spec: Spec, container: str, call: EnterCall, progress: Reporter
    ) -> str:
        assert self._sync is not None
        data = (*spec.runs.data, *spec.runs.outputs)
        report = self._sync.up(row.name, row.path, container, call.uid, call.gid, data, progress)
        for note in report.notes:
            progress(Progress("sync", note, log=True))
        sync_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._syncing[sync_id] = (row.name, row.path, container, call.uid, call.gid, data)
        return sync_id

    def docker_exec(self, plan: ExecPlan, fds: tuple[int, int, int], tty: bool) -> DockerExec:
        """A remote engine's fast path: the daemon runs the command as `docker exec` on the
        caller's own fds (see envd/gateways/docker_cli.py)."""
        argv = exec_argv(plan.container_id, plan.argv, plan.user, plan.workdir, plan.env, tty)
        return DockerExec(self._engine, plan.container_id, argv, fds, run_pid_file(plan.run_id))

    def sync_back(self, sync_id: str) -> list[str]:
        """Bring back what a command made in the volume; the notes (conflicts) to show."""
        with self._lock:
            pending = self._syncing.pop(sync_id, None)
        if self._sync is None or pending is None:
            return []
        return self._sync.down(*pending).notes

    # ------------------------------------------------------------ host and GPUs

    def _devices(self, spec: Spec, gpus: str) -> tuple[dict[str, Any], ...]:
        host = self._host.host
        if gpus and spec.gpu == "none":
            raise UsageError(
                f"--gpus {gpus}: envd.yaml says `gpu: none`",
                hint="set `gpu: auto` in envd.yaml to attach GPUs",
            )
        selection = parse_gpu_selection(gpus, len(host.gpus))  # refuses bad indexes
        if spec.gpu == "none" or not host.gpus or not self._nvidia_runtime():
            return ()
        return gpu_requests(selection)

    def _nvidia_runtime(self) -> bool:
        now = time.monotonic()
        if self._runtime is None or now - self._runtime[0] > RUNTIME_TTL_S:
            self._runtime = (now, self._engine.info().nvidia_runtime)
        return self._runtime[1]

    def _check_host(
        self, row: ProjectRow, spec: Spec, snapshot: ProjectSnapshot | None = None
    ) -> None:
        host = self._host.host
        check_host(spec.gpu, spec.cuda, host, bool(host.gpus) and self._nvidia_runtime())
        lock = (snapshot or self._projects.lock_state(row, spec)).lock
        if lock is not None:
            check_driver_for_lock(lock.target.min_driver, host)

    # ------------------------------------------------------------ runs

    def _record_run(
        self, row: ProjectRow, call: EnterCall, image_id: str, image: str, spec: Spec
    ) -> str:
        run = RunRow(
            id=uuid.uuid4().hex[:12],
            project=row.name,
            command=call.command,
            image=image,
            started_at=time.time(),
            ended_at=0.0,
            exit_code=0,
            finished=False,
            environment_hash="",
            host_hash="",
            git_commit="",
            git_dirty=False,
            workdir=project_subdir(row.path, call.cwd),
        )
        self._runs.start(
            run, spec.runs, row.path, image_id, provenance=self._provenance_of(row.path, image_id)
        )
        # Hashes and git state are read beside the command (`git status` on a large repository
        # must not delay its start); the exit status is answered once they are stored.
        self._runs.fill_provenance(run.id)
        return run.id

    def _provenance_of(self, project_dir: str, image_id: str) -> ProvenanceFill:
        def fill() -> tuple[str, str, str, bool]:
            try:
                env_hash, host_hash = self._fingerprints.hashes(image_id)
            except Exception:  # engine away: a run without hashes, not a failed run
                log.warning("no fingerprint hashes for %s", image_id, exc_info=True)
                env_hash, host_hash = "", ""
            commit, dirty = commit_and_dirty(project_dir)
            return env_hash, host_hash, commit, dirty

        return fill

    def wait_provenance(self, run_id: str | None = None) -> None:
        """Wait until a run's (or every pending run's) hashes and git state are stored."""
        self._runs.wait_provenance(run_id)

    def check_image(self, image: str) -> None:
        """After a command that ran in a warm container without the engine being asked about
        its image (ExecPlan.check_image): a tag removed behind envd's back is forgotten now,
        so that the next enter builds it again."""
        if not image:
            return
        try:
            self._images.on_engine(image)
        except Exception:
            log.warning("could not look %s up on the engine", image, exc_info=True)

    def finish(self, run_id: str, exit_code: int) -> RunRow:
        run = self._runs.finish(run_id, exit_code)
        # The state it ran on is part of its record when its caller learns how it ended (an
        # edit right after the exit is not this run's); bounded, and usually long done.
        self._runs.wait_provenance(run.id)
        self._warm.touch(run.project)
        self._events.publish(
            "run.recorded",
            run.project,
            shlex.join(run.command),
            run=run.id,
            exit_code=str(run.exit_code),
        )
        return run
