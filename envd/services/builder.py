"""Runs a build plan on the engine: one container per step, committed as a layer.

Caches (uv, apt archives) are named volumes mounted into steps and never committed; the host
CA bundle and the uv binary are bind-mounted read-only, so neither is ever baked into an image.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envd.errors import BuildFailed, EnvdError, RegistryError, VerificationError
from envd.gateways.engine import CommitSpec, Mount
from envd.gateways.projectfiles import read_lock
from envd.gateways.store import ProjectRow
from envd.gateways.trust import host_ca_bundle
from envd.model import plan as p
from envd.model.cuda import check_host
from envd.model.lockfile import LockFile, inputs_from_spec, staleness
from envd.progress import Progress, Reporter
from envd.services.debian_base import restore_debian_base
from envd.services.locker import lock_path

if TYPE_CHECKING:
    from envd.daemon.wiring import App

log = logging.getLogger(__name__)

STEP_ROLE = {"envd.role": "step"}
CACHE_REPOSITORY = "envd/cache"
UV_VOLUME = "envd-uv-cache"
APT_VOLUME = "envd-apt-archives"


@dataclass(frozen=True)
class StepOutcome:
    name: str
    key: str
    cached: bool
    summary: str


@dataclass(frozen=True)
class BuildOutcome:
    image: str
    image_id: str
    steps: tuple[StepOutcome, ...]
    cached: bool  # nothing ran
    elapsed_s: float
    lock_hash: str


def prepare_run_dir(run_dir: Path, requirements: str) -> None:
    """What steps see at /mnt: uv, the host CA bundle and the hashed requirements (host only)."""
    (run_dir / "requirements.txt").write_text(requirements)
    uv = Path(uv_binary())
    try:
        os.link(uv.resolve(), run_dir / "uv")
    except OSError:  # another filesystem: copy instead
        shutil.copy2(uv, run_dir / "uv")
    bundle = host_ca_bundle()
    if bundle:
        shutil.copyfile(bundle, run_dir / "ca.pem")
    run_dir.chmod(0o755)


def uv_binary() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if not found:
        raise EnvdError("uv is not installed", hint="run `make setup` (uv is a dependency)")
    return found


class Builder:
    def __init__(self, app: App) -> None:
        self.app = app
        self.after_build: list[Callable[[ProjectRow, BuildOutcome], None]] = []
        # Labels computed from the image just before its last step (the fingerprint).
        self.metadata_labels: Callable[[str, LockFile], dict[str, str]] | None = None
        self._flights: dict[str, Future[BuildOutcome]] = {}
        self._flights_lock = threading.Lock()

    # ------------------------------------------------------------ queries

    def plan(self, row: ProjectRow, lock: LockFile) -> p.BuildPlan:
        return p.make_plan(row.name, lock)

    def current_image(self, row: ProjectRow) -> str | None:
        """The image matching the project's current lock, from files and the store only."""
        try:
            lock = read_lock(lock_path(row))
            if lock is None or staleness(lock, inputs_from_spec(self.app.projects.spec(row))):
                return None
        except EnvdError:
            return None
        tag = self.plan(row, lock).tag
        return tag if self.app.store.image(tag) is not None else None

    def _cached(self, key: str) -> str | None:
        """A step's image when it is recorded and still on the engine (else forget it)."""
        image_id = self.app.store.step_image(key)
        if image_id is None:
            return None
        if self.app.engine.inspect_image(image_id) is None:
            self.app.store.drop_step(key)
            return None
        return image_id

    # ------------------------------------------------------------ build

    def build(self, row: ProjectRow, progress: Reporter, dry_run: bool = False) -> BuildOutcome:
        lock = self.app.locker.ensure_lock(row, progress)
        spec = self.app.projects.spec(row)
        host = self.app.host
        # The engine is asked only when the answer matters: a no-op build stays engine-free.
        needs_runtime = spec.gpu == "required" and len(host.gpus) > 0
        check_host(
            spec.gpu, spec.cuda, host, needs_runtime and self.app.engine.info().nvidia_runtime
        )
        plan = self.plan(row, lock)
        if dry_run:
            # What _base_image would use: a Debian base by its tag, an image base by its digest.
            base = lock.base.reference if lock.base.kind == "debian" else lock.base.digest
            steps = tuple(
                StepOutcome(
                    s.name,
                    s.key,
                    self.app.engine.image_exists(base)
                    if s.name == "base"
                    else self._cached(s.key) is not None,
                    s.summary,
                )
                for s in plan.steps
            )
            return BuildOutcome(
                plan.tag, "", steps, all(s.cached for s in steps), 0.0, plan.lock_hash
            )
        with self._flights_lock:
            flight = self._flights.get(plan.final_key)
            leader = flight is None
            if flight is None:
                flight = Future()
                self._flights[plan.final_key] = flight
        if not leader:
            progress(Progress("build", f"waiting for the running build of {row.name}"))
            return flight.result()
        try:
            outcome = self._run(row, lock, plan, progress)
            flight.set_result(outcome)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(plan.final_key, None)
        return outcome

    def _run(
        self, row: ProjectRow, lock: LockFile, plan: p.BuildPlan, progress: Reporter
    ) -> BuildOutcome:
        started = time.monotonic()
        final = self.app.store.image(plan.tag)
        if final is not None and self.app.engine.inspect_image(plan.tag) is not None:
            self.app.store.touch_image(plan.tag)
            self.app.store.touch_steps([s.key for s in plan.steps])
            self._ready(row, plan)
            steps = tuple(StepOutcome(s.name, s.key, True, s.summary) for s in plan.steps)
            return BuildOutcome(
                plan.tag, final.image_id, steps, True, time.monotonic() - started, plan.lock_hash
            )

        if lock.shared_image:
            shared = self._from_shared_image(row, lock, plan, progress, started)
            if shared is not None:
                return shared
        self.app.store.set_project_state(row.name, "building")
        self.app.events.publish("build.started", row.name, plan.tag)
        try:
            outcome = self._execute(row, lock, plan, progress, started)
        except BaseException as exc:
            reason = exc.message if isinstance(exc, EnvdError) else f"{type(exc).__name__}: {exc}"
            self.app.store.set_project_state(row.name, "failed", reason.splitlines()[0])
            self.app.events.publish("build.failed", row.name, reason.splitlines()[0])
            raise
        self._ready(row, plan)
        self.app.events.publish(
            "build.finished", row.name, plan.tag, elapsed=f"{outcome.elapsed_s:.1f}s"
        )
        for hook in self.after_build:
            try:
                hook(row, outcome)
            except EnvdError as exc:  # the image is built and tagged: report, do not fail it
                log.warning("after-build hook for %s failed: %s", row.name, exc.message)
                progress(Progress("build", f"built, but {exc.message}"))
        return outcome

    def _from_shared_image(
        self,
        row: ProjectRow,
        lock: LockFile,
        plan: p.BuildPlan,
        progress: Reporter,
        started: float,
    ) -> BuildOutcome | None:
        """A lock that names a shared image: pull and verify it instead of building."""
        try:
            received = self.app.sharing.pull(lock.shared_image, progress)
        except (RegistryError, VerificationError) as exc:
            progress(Progress("pull", f"cannot use {lock.shared_image} ({exc.message}); building"))
            return None
        if self.app.store.image(plan.tag) is None:
            progress(Progress("pull", f"{lock.shared_image} is not this lock's image; building"))
            return None
        steps = tuple(StepOutcome(s.name, s.key, True, s.summary) for s in plan.steps)
        return BuildOutcome(
            plan.tag, received.image_id, steps, False, time.monotonic() - started, plan.lock_hash
        )

    def _ready(self, row: ProjectRow, plan: p.BuildPlan) -> None:
        self.app.store.set_project_image(row.name, plan.tag, plan.lock_hash)
        self.app.store.set_project_state(row.name, "ready")

    def _base_image(self, lock: LockFile, progress: Reporter) -> str:
        engine = self.app.engine
        if lock.base.kind == "debian":
            system = list(lock.inputs.system)  # as written in envd.yaml: the same cache key
            return restore_debian_base(
                engine, lock.base, system, self.app.paths.cache / "debian", progress=progress
            )
        image = engine.inspect_image(lock.base.digest)
        if image is None:
            progress(Progress("base", f"pulling {lock.base.digest}"))
            image = engine.pull(lock.base.digest)
        return image.id

    def _execute(
        self,
        row: ProjectRow,
        lock: LockFile,
        plan: p.BuildPlan,
        progress: Reporter,
        started: float,
    ) -> BuildOutcome:
        engine = self.app.engine
        outcomes = [StepOutcome("base", plan.steps[0].key, True, plan.steps[0].summary)]
        parent = self._base_image(lock, progress)
        with tempfile.TemporaryDirectory(prefix="envd-build-") as tmp:
            run_dir = Path(tmp)
            prepare_run_dir(run_dir, plan.requirements)
            previous_key = plan.steps[0].key
            for step in plan.steps[1:]:
                cached = self._cached(step.key)
                if cached is not None:
                    progress(Progress(step.name, f"cached: {step.summary}"))
                    outcomes.append(StepOutcome(step.name, step.key, True, step.summary))
                    parent = cached
                    previous_key = step.key
                    continue
                progress(
                    Progress(
                        step.name, f"running: {step.summary}", elapsed_s=time.monotonic() - started
                    )
                )
                extra: dict[str, str] = {}
                if step.name == "metadata" and self.metadata_labels is not None:
                    progress(Progress("fingerprint", "reading the environment's fingerprint"))
                    extra = self.metadata_labels(parent, lock)
                before = (engine.inspect_image(parent) or _NO_IMAGE).size
                parent = self._run_step(row, plan, step, parent, run_dir, progress, extra)
                size = (engine.inspect_image(parent) or _NO_IMAGE).size
                # A step owns only its own layer; the image's size counts every parent's too.
                self.app.store.record_step(
                    step.key, previous_key, step.name, parent, max(size - before, 0)
                )
                outcomes.append(StepOutcome(step.name, step.key, False, step.summary))
                previous_key = step.key
        repository, tag = plan.tag.split(":")
        engine.tag(parent, repository, tag)
        info = engine.inspect_image(plan.tag)
        self.app.store.record_image(
            plan.tag,
            parent,
            row.name,
            "project",
            plan.final_key,
            plan.lock_hash,
            info.size if info else 0,
        )
        self.app.store.touch_steps([s.key for s in plan.steps])
        return BuildOutcome(
            plan.tag,
            parent,
            tuple(outcomes),
            all(o.cached for o in outcomes),
            time.monotonic() - started,
            plan.lock_hash,
        )

    def _run_step(
        self,
        row: ProjectRow,
        plan: p.BuildPlan,
        step: p.Step,
        parent: str,
        run_dir: Path,
        progress: Reporter,
        extra_labels: dict[str, str] | None = None,
    ) -> str:
        engine = self.app.engine
        mounts: list[Mount] = []
        if step.uses_ca or step.uses_uv:
            mounts.append(Mount(str(run_dir), p.RUN_DIR, read_only=True))
        if step.uses_uv:
            mounts.append(Mount(engine.ensure_volume(UV_VOLUME), p.UV_CACHE_MOUNT, volume=True))
        if step.uses_apt_cache:
            mounts.append(Mount(engine.ensure_volume(APT_VOLUME), p.APT_CACHE_MOUNT, volume=True))
        final = step.name == "metadata"
        commit = CommitSpec(
            repository=CACHE_REPOSITORY,
            tag=step.key[:24],
            labels={**dict(plan.labels), **(extra_labels or {}), **_role("image", step.name)}
            if final
            else _role("layer", step.name),
            env=dict(plan.env) if final else {},
            cmd=p.IDLE_CMD if final else (),
            workdir=p.WORKDIR if final else "",
        )

        def log(line: str) -> None:
            progress(Progress(step.name, line, log=True))

        result = engine.run(
            parent,
            list(step.argv),
            mounts=mounts,
            network=step.network,
            user="0",
            labels={**STEP_ROLE, "envd.project": row.name, "envd.owner": self.app.owner},
            on_output=log,
            commit=commit,
        )
        if result.exit_code != 0:
            tail = "\n".join(result.output.splitlines()[-20:])
            previous = self.app.store.project_by_name(row.name)
            kept = previous.image if previous and previous.image else ""
            raise BuildFailed(
                f"build step `{step.name}` of {row.name} failed (exit {result.exit_code}): "
                f"{step.summary}\n{tail}",
                hint=(f"the previous image {kept} is still usable; " if kept else "")
                + "fix envd.yaml and build again",
            )
        return result.image_id

    # ------------------------------------------------------------ housekeeping

    def cleanup_orphans(self) -> int:
        """Remove step containers a killed daemon of this $ENVD_HOME left behind."""
        removed = 0
        for container in self.app.engine.list_containers("envd.role=step"):
            if container.labels.get("envd.owner") == self.app.owner:  # not another daemon's
                self.app.engine.remove_container(container.id)
                removed += 1
        return removed


def _role(role: str, step: str) -> dict[str, str]:
    """Committed images would inherit the step container's labels: say what they are."""
    return {"envd.role": role, "envd.step": step}


class _NoImage:
    size = 0


_NO_IMAGE = _NoImage()
