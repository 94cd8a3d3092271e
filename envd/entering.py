"""Preparing an `enter`: the image, the warm container, the user, and the run record.

The CLI then runs `docker exec` itself, so the command's terminal, pipes and exit status are
the user's own; it reports the exit status back with FinishRun.
"""

from __future__ import annotations

import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envd.cuda import check_driver_for_lock, parse_gpu_selection
from envd.errors import BuildFailed, NotFound
from envd.gateways.git import commit_and_dirty
from envd.locking import lock_path, read_lock
from envd.plan import VENV, WORKDIR
from envd.progress import Progress, Reporter
from envd.store import ProjectRow, RunRow
from envd.warm import WarmRequest

if TYPE_CHECKING:
    from envd.app import App

SHELL = ("sh", "-c", "if command -v bash >/dev/null; then exec bash -l; else exec sh -l; fi")


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


def workdir_for(project_dir: str, cwd: str) -> str:
    """The caller's directory inside the container when it is inside the project."""
    if cwd:
        try:
            rel = Path(cwd).resolve().relative_to(Path(project_dir).resolve())
        except ValueError:
            return WORKDIR
        return WORKDIR if str(rel) == "." else f"{WORKDIR}/{rel.as_posix()}"
    return WORKDIR


def wrap_for_signals(run_id: str, command: tuple[str, ...]) -> tuple[str, ...]:
    """Record the command's pid so the CLI can forward signals to it (when there is no TTY)."""
    return ("sh", "-c", f'echo $$ > {pid_file(run_id)}; exec "$@"', "sh", *command)


def pid_file(run_id: str) -> str:
    return f"/tmp/.envd-run-{run_id}.pid"


def gpu_requests(selection: tuple[int, ...] | None) -> tuple[dict[str, Any], ...]:
    request: dict[str, Any] = {"Driver": "nvidia", "Capabilities": [["gpu"]]}
    if selection is None:
        request["Count"] = -1
    else:
        request["DeviceIDs"] = [str(i) for i in selection]
    return (request,)


class Entering:
    def __init__(self, app: App) -> None:
        self.app = app

    def prepare(self, call: EnterCall, progress: Reporter) -> ExecPlan:
        app = self.app
        row = app.projects.resolve(call.project)
        image = app.builder.current_image(row)
        if image is None:
            image = self._build(row, progress)
        record = app.store.image(image)
        image_id = record.image_id if record else image
        warm = app.warm.get(row.name)
        started = warm is None or warm.image != image
        if started:
            spec = app.projects.spec(row)
            lock = read_lock(lock_path(row))
            host = app.host
            if lock is not None:
                check_driver_for_lock(lock.target.min_driver, host)
            devices: tuple[dict[str, Any], ...] = ()
            use_gpu = spec.gpu != "none" and host.gpus and app.engine.info().nvidia_runtime
            if use_gpu:
                devices = gpu_requests(parse_gpu_selection(call.gpus, len(host.gpus)))
            request = WarmRequest(
                row.name, image, image_id, row.path, spec.ports, device_requests=devices
            )
        else:
            request = WarmRequest(row.name, image, image_id, row.path)
        warm = app.warm.ensure(request)
        name = call.user_name or ("root" if call.uid == 0 else f"user{call.uid}")
        app.warm.ensure_user(warm, call.uid, call.gid, name, VENV)
        home = "/root" if call.uid == 0 else f"/home/{name}"
        run_id = self._record_run(row, call, image_id, image) if call.command else ""
        if call.command:
            argv = call.command if call.tty else wrap_for_signals(run_id, call.command)
        else:
            argv = SHELL
        return ExecPlan(
            container_id=warm.container_id,
            container_name=warm.name,
            user=f"{call.uid}:{call.gid}",
            workdir=workdir_for(row.path, call.cwd),
            env={"HOME": home, "USER": name, "ENVD_PROJECT": row.name},
            argv=tuple(argv),
            run_id=run_id,
            started=started,
        )

    def _build(self, row: ProjectRow, progress: Reporter) -> str:
        progress(Progress("build", f"building {row.name} first"))
        try:
            return self.app.builder.build(row, progress).image
        except BuildFailed as exc:
            previous = self.app.store.project_by_name(row.name)
            if previous and previous.image and self.app.store.image(previous.image):
                exc.hint = (
                    f"the previous image still works: `docker run -it {previous.image}`; "
                    "fix envd.yaml and `envctl build` again"
                )
            raise

    def _record_run(self, row: ProjectRow, call: EnterCall, image_id: str, image: str) -> str:
        env_hash, host_hash = self.app.fingerprint_hashes(image_id)
        commit, dirty = commit_and_dirty(row.path)
        run = RunRow(
            id=uuid.uuid4().hex[:12],
            project=row.name,
            command=call.command,
            image=image,
            started_at=time.time(),
            ended_at=0.0,
            exit_code=0,
            finished=False,
            environment_hash=env_hash,
            host_hash=host_hash,
            git_commit=commit,
            git_dirty=dirty,
        )
        self.app.store.start_run(run)
        return run.id

    def finish(self, run_id: str, exit_code: int) -> RunRow:
        run = self.app.store.finish_run(run_id, exit_code)
        if run is None:
            raise NotFound(f"no run {run_id}", hint="`envctl runs` lists them")
        self.app.warm.touch(run.project)
        self.app.events.publish(
            "run.recorded",
            run.project,
            shlex.join(run.command),
            run=run.id,
            exit_code=str(exit_code),
        )
        return run
