"""Builds a project's image: the lock first, the host checked, then the plan's steps, once.

Concurrent requests for the same plan share one build (single flight); the steps themselves
run in envd.services.steps, and the finished image is recorded by envd.services.images.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from envd.errors import EnvdError, RegistryError, VerificationError, disk_full
from envd.events import EventBus
from envd.gateways.engine import Engine
from envd.gateways.store import ProjectRow
from envd.model import plan as p
from envd.model.lockfile import LockFile
from envd.model.state import ProjectState
from envd.progress import Progress, Reporter
from envd.services.buildcache import BuildCache, Fetched, locked_environment
from envd.services.fingerprints import ENV_LABEL, Fingerprints
from envd.services.host import HostProbe
from envd.services.images import Images
from envd.services.locker import Locker
from envd.services.planning import ProjectInputs, read_project_inputs, reads_project_files
from envd.services.projects import Projects
from envd.services.sharing import Sharing
from envd.services.steps import StepOutcome, StepRunner, StepsRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOutcome:
    image: str
    image_id: str
    steps: tuple[StepOutcome, ...]
    cached: bool  # nothing ran
    elapsed_s: float
    lock_hash: str


class Builder:
    def __init__(
        self,
        projects: Projects,
        locker: Locker,
        images: Images,
        steps: StepRunner,
        fingerprints: Fingerprints,
        sharing: Sharing,
        host: HostProbe,
        engine: Engine,
        events: EventBus,
        namespace: str = "envd",
        cache: BuildCache | None = None,
    ) -> None:
        self._namespace = namespace
        self._cache = cache  # the team build cache (a registry), when one is configured
        self._projects = projects
        self._locker = locker
        self._images = images
        self._steps = steps
        self._fingerprints = fingerprints
        self._sharing = sharing
        self._host = host
        self._engine = engine
        self._events = events
        self._flights: dict[str, Future[BuildOutcome]] = {}
        self._flights_lock = threading.Lock()

    def plan(
        self, row: ProjectRow, lock: LockFile, inputs: ProjectInputs | None = None
    ) -> p.BuildPlan:
        if inputs is None:
            inputs = read_project_inputs(row.path, lock)
        return p.make_plan(
            row.name,
            lock,
            self._namespace,
            setup_files=inputs.setup_files,
            package=inputs.package,
            members=inputs.members,
        )

    def up_to_date(self, row: ProjectRow) -> BuildOutcome | None:
        """The outcome of `build` when it would run nothing: envd.lock exists, matches
        envd.yaml, and the image of its plan (with the project files the steps read, as they
        are now) is recorded and on the engine. None when a build would lock, run a step,
        pull or fail: the caller then builds (`build` says what it does and why).

        Read from the files now, never from an earlier answer: a changed envd.yaml, envd.lock
        or step input is seen by this call."""
        try:
            snapshot = self._projects.snapshot(row)
            lock = snapshot.current
            if lock is None:
                return None
            inputs = read_project_inputs(row.path, lock)
            plan = self.plan(row, lock, inputs)
        except EnvdError:
            return None  # the build says why
        return self._cached(row, plan, time.monotonic())

    def build(self, row: ProjectRow, progress: Reporter, dry_run: bool = False) -> BuildOutcome:
        # A dry run writes nothing, not even a missing envd.lock (it is resolved in memory).
        snapshot = self._projects.snapshot(row)
        lock = self._locker.ensure_lock(row, progress, write=not dry_run, snapshot=snapshot)
        # `gpu:` and `cuda:` are checked where a GPU is used (enter, runs), never here: a
        # laptop builds, locks and shares the image a GPU machine runs.
        inputs = read_project_inputs(row.path, lock)
        plan = self.plan(row, lock, inputs)
        if dry_run:
            steps = self._steps.dry_run(lock, plan)
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
            outcome = self._run(row, lock, plan, inputs, progress)
            flight.set_result(outcome)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(plan.final_key, None)
        return outcome

    def _cached(self, row: ProjectRow, plan: p.BuildPlan, started: float) -> BuildOutcome | None:
        """The plan's image when it is built already (recorded, on the engine, from the same
        step inputs): marked used and made the project's image."""
        final = self._images.built(plan)
        if final is None or final.cache_key != plan.final_key:
            return None  # (the same lock, but a project file a step reads changed)
        self._images.touch(plan)
        self._projects.set_image(row.name, plan.tag, plan.lock_hash)
        steps = tuple(StepOutcome(s.name, s.key, True, s.summary) for s in plan.steps)
        return BuildOutcome(
            plan.tag, final.image_id, steps, True, time.monotonic() - started, plan.lock_hash
        )

    def _run(
        self,
        row: ProjectRow,
        lock: LockFile,
        plan: p.BuildPlan,
        inputs: ProjectInputs,
        progress: Reporter,
    ) -> BuildOutcome:
        started = time.monotonic()
        cached = self._cached(row, plan, started)
        if cached is not None:
            return cached
        if lock.shared_image:
            shared = self._from_shared_image(row, lock, plan, progress, started)
            if shared is not None:
                return shared
        previous = self._projects.by_name(row.name)
        kept = previous.image if previous and previous.image else ""
        self._projects.set_state(row.name, ProjectState.BUILDING)
        self._events.publish("build.started", row.name, plan.tag)
        fetched = Fetched()
        try:

            def run_steps() -> StepsRun:
                return self._steps.run(
                    row.name,
                    lock,
                    plan,
                    progress,
                    metadata_labels=self._checked_labels,
                    previous_image=kept,
                    contents=inputs.contents,
                )

            # Steps come from the team cache only when the build is held to the lock's
            # environment hash (checked on the final image, below in _checked_labels or in
            # the cache's own check of a pulled last step); without one, every step runs here.
            if self._cache is not None:
                if locked_environment(lock):
                    fetched = self._cache.fetch(row.name, lock, plan, progress)
                else:
                    fetched = self._cache.unchecked(row.name, lock, plan, progress)
            try:
                ran = run_steps()
            except VerificationError as exc:
                if self._cache is None or not fetched.keys:
                    raise
                # What the cache gave passed its checks, yet the build from it is not the
                # lock's environment: forget it and build every step here.
                progress(
                    Progress(
                        "cache",
                        f"refused {fetched.repository}:{fetched.keys[0][:12]}: {exc.message} "
                        "(building it here)",
                    )
                )
                self._cache.forget(fetched)
                fetched = Fetched(fetched.repository, (), fetched.refused + fetched.keys)
                ran = run_steps()
            repository, tag = plan.tag.split(":")
            self._engine.tag(ran.image_id, repository, tag)
            self._images.record(row, plan, ran.image_id)
            self._images.touch(plan)
        except BaseException as exc:
            self._forget_unconfirmed(fetched)
            full = disk_full(exc)  # (the interceptor makes it exit 11; the state says why too)
            reason = (
                exc.message
                if isinstance(exc, EnvdError)
                else full.message
                if full is not None
                else f"{type(exc).__name__}: {exc}"
            )
            self._projects.set_state(row.name, ProjectState.FAILED, reason.splitlines()[0])
            self._events.publish("build.failed", row.name, reason.splitlines()[0])
            raise
        self._projects.set_image(row.name, plan.tag, plan.lock_hash)
        outcome = BuildOutcome(
            plan.tag,
            ran.image_id,
            ran.steps,
            all(o.cached for o in ran.steps),
            time.monotonic() - started,
            plan.lock_hash,
        )
        self._events.publish(
            "build.finished", row.name, plan.tag, elapsed=f"{outcome.elapsed_s:.1f}s"
        )
        try:
            fp = self._fingerprints.record(outcome.image_id, lock)
            if (
                not lock.environment_hash
                and not fetched.keys  # (always so: no hash, no cache step; see above)
                and not lock.inputs.from_source
                and not reads_project_files(lock)
            ):
                # The first hash a lock records is this machine's, hashed here from the
                # bytes of an image every step of which ran here, never a cache record's.
                # (source builds are not bit-reproducible, and the files of the project a
                # build reads are not in the lock: no hash to hold other machines to)
                self._locker.record_environment(row, lock, fp.environment_hash)
        except EnvdError as exc:  # the image is built and tagged: report, do not fail it
            log.warning("fingerprint of %s not recorded: %s", row.name, exc.message)
            progress(Progress("build", f"built, but {exc.message}"))
        if self._cache is not None:
            self._cache.push(row.name, lock, plan, progress, fetched)
        return outcome

    def _forget_unconfirmed(self, fetched: Fetched) -> None:
        """A build that failed never compared what it took from the cache with the lock:
        drop it, so that no later build (of another lock, maybe with no hash) starts on it."""
        if self._cache is None or not fetched.keys:
            return
        try:
            self._cache.forget(fetched)
        except EnvdError as exc:
            log.warning("forgetting %s from the cache: %s", fetched.keys, exc.message)

    def _checked_labels(self, parent: str, lock: LockFile) -> dict[str, str]:
        """The fingerprint label, refused before anything is tagged when envd.lock recorded
        another environment for the same pins."""
        labels = self._fingerprints.labels_before_metadata(parent, lock)
        built = labels[ENV_LABEL]
        expected = locked_environment(lock)
        if expected and built != expected:
            raise VerificationError(
                "this machine built a different environment from the same envd.lock: "
                f"{built}, but the lock records {expected}",
                hint="the base or a package came out as other bytes here; compare with the "
                "original (`envctl diff PROJECT image:REF`, or pull the shared image)",
            )
        return labels

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
            received = self._sharing.pull(lock.shared_image, progress)
        except (RegistryError, VerificationError) as exc:
            progress(Progress("pull", f"cannot use {lock.shared_image} ({exc.message}); building"))
            return None
        if self._images.built(plan) is None:
            progress(Progress("pull", f"{lock.shared_image} is not this lock's image; building"))
            return None
        steps = tuple(StepOutcome(s.name, s.key, True, s.summary) for s in plan.steps)
        return BuildOutcome(
            plan.tag, received.image_id, steps, False, time.monotonic() - started, plan.lock_hash
        )
