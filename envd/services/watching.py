"""Reacting to edits: mark projects stale, invalid or missing, and rebuild in the background.

A committed envd.lock is never rewritten here: a stale lock only marks the project stale and
says to run `envctl lock`; a missing lock is made (there is nothing to overwrite).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envd.errors import EnvdError, SpecError
from envd.events import EventBus
from envd.gateways.projectfiles import load_spec
from envd.gateways.store import ProjectRow
from envd.gateways.watcher import FolderWatcher
from envd.model.spec import LOCK_FILENAME, SPEC_FILENAME, Spec
from envd.model.state import ProjectState
from envd.progress import ignore
from envd.services.builder import Builder
from envd.services.images import Images
from envd.services.projects import Projects
from envd.services.settings import Settings

log = logging.getLogger(__name__)
DEBOUNCE_S = 1.0  # watchdog pairs rename events with a delay of its own


def relevant_files(project_dir: str, spec: Spec | None) -> set[str]:
    """The absolute paths whose edits can change the project's lock or image: envd.yaml,
    envd.lock, every requirements file (with the ones they include, wherever they are), the
    files setup steps read and, for `project:`, pyproject.toml."""
    root = Path(project_dir)
    names = [SPEC_FILENAME, LOCK_FILENAME]
    if spec is None:
        names.append("requirements.txt")  # the spec is unreadable: keep a common name in view
    else:
        names += spec.requirements_files
        names += [f for step in spec.setup_steps for f in step.files]
        if spec.project is not None:
            names.append("pyproject.toml")
    return {os.path.normpath(root / name) for name in names}


def folders_of(files: set[str]) -> set[str]:
    return {os.path.dirname(f) for f in files}


@dataclass(frozen=True)
class Verdict:
    state: ProjectState  # READY, STALE, INVALID or MISSING
    reason: str
    action: str  # "", "lock-and-build", "build"


def judge(row: ProjectRow, projects: Projects, images: Images) -> Verdict:
    """What the project's files say now (reads files and the store, no engine work)."""
    if not Path(row.path).is_dir():
        return Verdict(ProjectState.MISSING, f"{row.path} is gone", "")
    try:
        spec = load_spec(row.path)
    except SpecError as exc:
        return Verdict(ProjectState.INVALID, exc.message, "")
    try:
        state = projects.snapshot(row, spec)  # the one staleness answer, as status and build
    except EnvdError as exc:
        return Verdict(ProjectState.STALE, exc.message, "")
    if state.lock is None:
        return Verdict(ProjectState.STALE, f"no {LOCK_FILENAME} yet", "lock-and-build")
    if state.reasons:
        return Verdict(
            ProjectState.STALE,
            f"{SPEC_FILENAME} changed: {'; '.join(state.reasons)}; run envctl lock",
            "",
        )
    if images.current_image(row, snapshot=state) is None:
        return Verdict(ProjectState.STALE, "the image is older than envd.lock", "build")
    return Verdict(ProjectState.READY, "", "")


class Debouncer:
    """Calls `fire(key)` once a key has been quiet for `delay` seconds."""

    def __init__(self, fire: Callable[[str], None], delay: float = DEBOUNCE_S) -> None:
        self._fire = fire
        self._delay = delay
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    def poke(self, key: str) -> None:
        with self._lock:
            old = self._timers.pop(key, None)
            if old is not None:
                old.cancel()
            timer = threading.Timer(self._delay, self._run, args=(key,))
            timer.daemon = True
            self._timers[key] = timer
            timer.start()

    def _run(self, key: str) -> None:
        with self._lock:
            self._timers.pop(key, None)
        self._fire(key)

    def cancel(self) -> None:
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()


class ProjectWatcher:
    def __init__(
        self,
        projects: Projects,
        images: Images,
        builder: Builder,
        settings: Settings,
        events: EventBus,
    ) -> None:
        self._projects = projects
        self._images = images
        self._builder = builder
        self._settings = settings
        self._events = events
        self._folders = FolderWatcher(self._on_file)
        self._debounce = Debouncer(self._react)
        self._building: set[str] = set()
        self._again: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        # project directory -> the files that matter to it (absolute), and the folders they
        # are in: several projects may share a folder (a common requirements/ directory).
        self._files: dict[str, set[str]] = {}

    def start(self) -> None:
        self._started = True
        self._folders.start()
        for row in self._projects.list():
            self._follow(row.path)
        threading.Thread(target=self._follow_registry, daemon=True, name="watch-registry").start()

    def _follow(self, project_dir: str) -> None:
        """(Re)read which files matter to the project and watch the folders they are in."""
        spec = None
        try:
            spec = load_spec(project_dir)
        except EnvdError:
            pass
        with self._lock:
            self._files[project_dir] = relevant_files(project_dir, spec) | {project_dir}
        self._reconcile()

    def _forget(self, project_dir: str) -> None:
        with self._lock:
            self._files.pop(project_dir, None)
        self._reconcile()

    def _reconcile(self) -> None:
        with self._lock:
            wanted = set(self._files) | {
                folder for files in self._files.values() for folder in folders_of(files)
            }
        for folder in wanted:
            self._folders.watch(folder)
        for folder in set(self._folders.watched()) - wanted:
            self._folders.unwatch(folder)

    def stop(self) -> None:
        self._stop.set()
        self._debounce.cancel()
        if self._started:
            self._folders.stop()

    def watched(self) -> list[str]:
        return self._folders.watched()

    def _follow_registry(self) -> None:
        for event in self._events.subscribe(is_active=lambda: not self._stop.is_set()):
            if event.kind == "project.added":
                self._follow(event.message)
            elif event.kind == "project.removed":
                self._forget(event.message)

    def _on_file(self, directory: str, name: str) -> None:
        path = os.path.normpath(os.path.join(directory, name)) if name else directory
        with self._lock:
            hit = [d for d, files in self._files.items() if path in files or d == path]
        for project_dir in hit:
            row = self._projects.by_path(project_dir)
            if row is not None:
                self._debounce.poke(row.name)

    def _react(self, name: str) -> None:
        row = self._projects.by_name(name)
        if row is None:
            return
        verdict = judge(row, self._projects, self._images)
        building = row.state == ProjectState.BUILDING
        failed = row.state == ProjectState.FAILED and verdict.action == "build"
        if not (building and verdict.state in (ProjectState.READY, ProjectState.STALE)) and not (
            failed  # "the image is older than envd.lock" says less than why its build failed
        ):
            # A build in flight writes envd.lock itself: that is no reason to call it stale.
            self._projects.set_state(name, verdict.state, verdict.reason)
        if verdict.state != ProjectState.READY:
            self._events.publish(f"project.{verdict.state}", name, verdict.reason)
        if verdict.state == ProjectState.MISSING:
            self._forget(row.path)
        else:
            self._follow(row.path)  # an edit may name other files (a new `-r` include)
        if verdict.action and self._rebuilds_enabled(row):
            self._rebuild(row)

    def _rebuilds_enabled(self, row: ProjectRow) -> bool:
        config = self._settings.current
        if not (config.watch and config.rebuild_on_change):
            return False
        try:
            return load_spec(row.path).watch
        except EnvdError:
            return False

    def _rebuild(self, row: ProjectRow) -> None:
        """One background build per project; a change during it queues exactly one more."""
        with self._lock:
            if row.name in self._building:
                self._again.add(row.name)
                return
            self._building.add(row.name)

        def run() -> None:
            first = True
            while True:
                current = self._projects.by_name(row.name)
                if current is None or (
                    not first and not judge(current, self._projects, self._images).action
                ):
                    with self._lock:  # the queued change needs no build after all
                        self._building.discard(row.name)
                        self._again.discard(row.name)
                    return
                first = False
                self._events.publish("watch.rebuild", row.name, "rebuilding after a change")
                try:
                    self._builder.build(row, ignore)
                except EnvdError as exc:
                    log.warning("background build of %s failed: %s", row.name, exc.message)
                except Exception:
                    log.exception("background build of %s crashed", row.name)
                with self._lock:
                    if row.name not in self._again:
                        self._building.discard(row.name)
                        return
                    self._again.discard(row.name)

        threading.Thread(target=run, daemon=True, name=f"rebuild-{row.name}").start()
