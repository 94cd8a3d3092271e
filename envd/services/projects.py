"""The project registry: names and paths of the projects envd knows, their state, and the one
answer to "what is this project's lock state"."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from envd.errors import Conflict, NotFound
from envd.events import EventBus
from envd.gateways.projectfiles import load_spec, read_lock
from envd.gateways.store import ProjectRow, Store
from envd.model.lockfile import LockFile, inputs_from_spec, staleness
from envd.model.spec import LOCK_FILENAME, SPEC_FILENAME, Spec
from envd.model.state import ProjectState
from envd.services.templates import write_template


@dataclass(frozen=True)
class LockState:
    """envd.lock against envd.yaml, as read now."""

    path: Path
    lock: LockFile | None  # None: there is no envd.lock yet
    reasons: tuple[str, ...]  # why the lock no longer matches envd.yaml; () when it does

    @property
    def current(self) -> LockFile | None:
        """The lock when it exists and matches envd.yaml, else None."""
        return self.lock if self.lock is not None and not self.reasons else None


def lock_path(row: ProjectRow) -> Path:
    return Path(row.path) / LOCK_FILENAME


def looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref in (".", "..") or ref.startswith("~")


class Projects:
    def __init__(self, store: Store, events: EventBus) -> None:
        self._store = store
        self._events = events

    def list(self) -> list[ProjectRow]:
        return self._store.projects()

    def resolve(self, ref: str) -> ProjectRow:
        """A registered name, or a directory path (registered on first use)."""
        if not ref:
            raise NotFound("no project given", hint="name a project or a directory with envd.yaml")
        if not looks_like_path(ref):
            row = self._store.project_by_name(ref)
            if row is not None:
                return row
            if not Path(ref).is_dir():
                raise NotFound(
                    f"no project named `{ref}`",
                    hint="`envctl ls` lists projects; a path (./DIR) registers a new one",
                )
        path = Path(ref).expanduser().resolve()
        row = self._store.project_by_path(str(path))
        if row is not None:
            return row
        return self.add(path)

    def spec(self, row: ProjectRow) -> Spec:
        if not Path(row.path).is_dir():
            raise NotFound(
                f"project `{row.name}`: its directory {row.path} is gone",
                hint=f"restore it, or forget the project with `envctl rm {row.name}`",
            )
        return load_spec(row.path)

    def lock_state(self, row: ProjectRow, spec: Spec | None = None) -> LockState:
        """Raises SpecError for an invalid envd.yaml and LockError for an unreadable lock."""
        spec = spec if spec is not None else self.spec(row)
        path = lock_path(row)
        lock = read_lock(path)
        if lock is None:
            return LockState(path, None, (f"no {LOCK_FILENAME} yet",))
        return LockState(path, lock, tuple(staleness(lock, inputs_from_spec(spec))))

    def set_state(self, name: str, state: ProjectState, reason: str = "") -> None:
        self._store.set_project_state(name, state, reason)

    def set_image(self, name: str, image: str, lock_hash: str) -> None:
        """The project's current image; it is then ready."""
        self._store.set_project_image(name, image, lock_hash)
        self._store.set_project_state(name, ProjectState.READY)

    def by_name(self, name: str) -> ProjectRow | None:
        return self._store.project_by_name(name)

    def by_path(self, path: str) -> ProjectRow | None:
        return self._store.project_by_path(path)

    def add(self, path: Path) -> ProjectRow:
        path = path.expanduser().resolve()
        if not path.is_dir():
            raise NotFound(f"{path} is not a directory")
        if not (path / SPEC_FILENAME).is_file():
            raise NotFound(
                f"{path} has no {SPEC_FILENAME}",
                hint=f"create one with `envctl init {path}` (see `envctl init --list`)",
            )
        spec = load_spec(path)
        existing = self._store.project_by_path(str(path))
        clash = self._store.project_by_name(spec.name)
        if clash is not None and clash.path != str(path):
            raise Conflict(
                f"project name `{spec.name}` is already used by {clash.path}",
                hint=f"set a different `name:` in {path / SPEC_FILENAME}",
            )
        if existing is not None:
            if existing.name != spec.name:
                self._store.rename_project(existing.name, spec.name)
            row = self._store.project_by_name(spec.name)
            assert row is not None
            return row
        row = self._store.add_project(spec.name, str(path))
        self._events.publish("project.added", row.name, str(path))
        return row

    def init(self, directory: Path, template: str, *, written: bool = False) -> ProjectRow:
        """Register `directory`; write envd.yaml from `template` unless `written` already."""
        if not written:
            write_template(template or "default", directory.expanduser().resolve())
        return self.add(directory)

    def remove(self, ref: str) -> ProjectRow:
        row = self.resolve_registered(ref)
        self._store.remove_project(row.name)
        self._events.publish("project.removed", row.name, row.path)
        return row

    def resolve_registered(self, ref: str) -> ProjectRow:
        """Like resolve, but never registers: for commands that forget or inspect."""
        row = self._store.project_by_name(ref)
        if row is None and looks_like_path(ref):
            row = self._store.project_by_path(str(Path(ref).expanduser().resolve()))
        if row is None:
            raise NotFound(f"no project `{ref}` is registered", hint="`envctl ls` lists projects")
        return row
