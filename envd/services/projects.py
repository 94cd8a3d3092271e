"""The project registry: names and paths of the projects envd knows, their state, and the one
answer to "what is this project's lock state"."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from envd.errors import Conflict, EnvdError, NotFound
from envd.events import EventBus
from envd.gateways.projectfiles import load_spec, read_lock
from envd.gateways.store import ProjectRow, Store
from envd.model.lockfile import LockFile, spec_staleness
from envd.model.spec import LOCK_FILENAME, SPEC_FILENAME, Spec
from envd.model.state import ProjectState
from envd.services.templates import write_template

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ProjectSnapshot:
    """One request's read of a project: envd.yaml and envd.lock, read once, and the one
    answer to whether they agree. Made by `Projects.snapshot` and passed down, so the parts of
    one request (build's lock check and plan, status's reasons and GPU notes, the watcher's
    verdict) never re-read the files, nor disagree about them."""

    row: ProjectRow
    spec: Spec
    state: LockState

    @property
    def lock(self) -> LockFile | None:
        return self.state.lock

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.state.reasons

    @property
    def current(self) -> LockFile | None:
        return self.state.current


def lock_path(row: ProjectRow) -> Path:
    return Path(row.path) / LOCK_FILENAME


def looks_like_path(ref: str) -> bool:
    return os.sep in ref or ref in (".", "..") or ref.startswith("~")


class Projects:
    def __init__(self, store: Store, events: EventBus) -> None:
        self._store = store
        self._events = events

    def list(self) -> list[ProjectRow]:
        """Every registered project, under its envd.yaml's current `name:` where it changed."""
        rows = []
        for row in self._store.projects():
            try:
                rows.append(self.follow_name(row))
            except Conflict:
                rows.append(row)  # the rename is refused where the project is used
        return sorted(rows, key=lambda r: r.name)

    def resolve(self, ref: str) -> ProjectRow:
        """A registered name, or a directory path (registered on first use).

        envd.yaml's `name:` is the project's name: a project whose `name:` changed since it was
        registered is renamed here, whichever of its names (old or new) `ref` uses.
        """
        if not ref:
            raise NotFound("no project given", hint="name a project or a directory with envd.yaml")
        if not looks_like_path(ref):
            row = self._store.project_by_name(ref) or self._renamed_to(ref)
            if row is not None:
                return self.follow_name(row)
            if not Path(ref).is_dir():
                raise NotFound(
                    f"no project named `{ref}`",
                    hint="`envctl ls` lists projects; a path (./DIR) registers a new one",
                )
        path = Path(ref).expanduser().resolve()
        row = self._store.project_by_path(str(path))
        if row is not None:
            return self.follow_name(row)
        return self.add(path)

    def follow_name(self, row: ProjectRow) -> ProjectRow:
        """The row renamed to its envd.yaml's `name:` when that changed (Conflict when another
        live project has that name). A missing directory or an invalid envd.yaml leaves the row
        as it is: whoever reads the spec next reports that."""
        name = self._spec_name(row.path)
        if name is None or name == row.name:
            return row
        clash = self._store.project_by_name(name)
        if clash is not None and clash.path != row.path:
            if Path(clash.path).is_dir():
                raise Conflict(
                    f"{Path(row.path) / SPEC_FILENAME} renames project `{row.name}` to "
                    f"`{name}`, but `{name}` is already used by {clash.path}",
                    hint=f"choose another `name:`, or forget the other one: `envctl rm {name}`",
                )
            self._take_over(clash, row.path)
        self._rename(row.name, name)
        renamed = self._store.project_by_name(name)
        assert renamed is not None
        return renamed

    def _spec_name(self, directory: str) -> str | None:
        if not (Path(directory) / SPEC_FILENAME).is_file():
            return None
        try:
            return load_spec(directory).name
        except EnvdError:
            return None

    def _renamed_to(self, name: str) -> ProjectRow | None:
        """A registered project whose envd.yaml now says `name: NAME`."""
        for row in self._store.projects():
            if row.name != name and self._spec_name(row.path) == name:
                return row
        return None

    def _rename(self, old: str, new: str) -> None:
        """Rename a project; its image records and runs follow it (images keep their tags,
        so entering keeps working until the next build tags them under the new name)."""
        self._store.rename_project(old, new)
        log.info("project %s renamed to %s (its envd.yaml says so)", old, new)
        self._events.publish("project.renamed", new, f"renamed from {old}", old=old)

    def _take_over(self, stale: ProjectRow, path: str) -> None:
        """Forget a project whose directory is gone, so that `path`'s project can have its name."""
        self._store.remove_project(stale.name)
        message = (
            f"project `{stale.name}` now names {path}: its previous directory {stale.path} is gone"
        )
        log.warning("%s", message)
        self._events.publish("project.removed", stale.name, stale.path)
        self._events.publish("project.replaced", stale.name, message, old_path=stale.path)

    def spec(self, row: ProjectRow) -> Spec:
        if not Path(row.path).is_dir():
            raise NotFound(
                f"project `{row.name}`: its directory {row.path} is gone",
                hint=f"restore it, or forget the project with `envctl rm {row.name}`",
            )
        return load_spec(row.path)

    def lock_state(self, row: ProjectRow, spec: Spec | None = None) -> LockState:
        """Raises SpecError for an invalid envd.yaml and LockError for an unreadable lock.
        The reasons are the model's one staleness answer (inputs, then direct URLs)."""
        spec = spec if spec is not None else self.spec(row)
        path = lock_path(row)
        lock = read_lock(path)
        if lock is None:
            return LockState(path, None, (f"no {LOCK_FILENAME} yet",))
        return LockState(path, lock, tuple(spec_staleness(lock, spec)))

    def snapshot(self, row: ProjectRow, spec: Spec | None = None) -> ProjectSnapshot:
        """envd.yaml and envd.lock read once for this request (SpecError, LockError, NotFound
        as `spec` and `lock_state` raise them)."""
        spec = spec if spec is not None else self.spec(row)
        return ProjectSnapshot(row, spec, self.lock_state(row, spec))

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
        """Register the project in `path` (its envd.yaml names it). A project already there is
        renamed when its `name:` changed; a name used by a project whose directory is gone is
        taken over (with a notice); a name used by a live project is refused."""
        path = path.expanduser().resolve()
        if not path.is_dir():
            raise NotFound(f"{path} is not a directory")
        if not os.path.lexists(path / SPEC_FILENAME):  # a FIFO or a link: load_spec says why
            raise NotFound(
                f"{path} has no {SPEC_FILENAME}",
                hint=f"create one with `envctl init {path}` (see `envctl init --list`)",
            )
        spec = load_spec(path)
        existing = self._store.project_by_path(str(path))
        if existing is not None:
            return self.follow_name(existing)
        clash = self._store.project_by_name(spec.name)
        if clash is not None:
            try:  # the other project may itself have been renamed in its envd.yaml
                clash = self.follow_name(clash)
            except Conflict:
                pass
        if clash is not None and clash.name == spec.name:
            if Path(clash.path).is_dir():
                raise Conflict(
                    f"project name `{spec.name}` is already used by {clash.path}",
                    hint=f"set a different `name:` in {path / SPEC_FILENAME}",
                )
            self._take_over(clash, str(path))
        row = self._store.add_project(spec.name, str(path))
        self._events.publish("project.added", row.name, str(path))
        return row

    def init(self, directory: Path, template: str, *, written: bool = False) -> ProjectRow:
        """Register `directory`, writing its envd.yaml from `template` unless it is `written`
        already (adopted); when registering fails (a name clash, say), nothing written stays."""
        directory = directory.expanduser().resolve()
        created = []  # the folders this call makes, deepest first
        folder = directory
        while not folder.exists():
            created.append(folder)
            folder = folder.parent
        spec = (
            directory / SPEC_FILENAME
            if written
            else write_template(template or "default", directory)
        )
        try:
            return self.add(directory)
        except BaseException:
            spec.unlink(missing_ok=True)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise

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
            row = self._renamed_to(ref)
        if row is None:
            raise NotFound(f"no project `{ref}` is registered", hint="`envctl ls` lists projects")
        try:
            return self.follow_name(row)
        except Conflict:
            return row  # forgetting or inspecting it must still work
