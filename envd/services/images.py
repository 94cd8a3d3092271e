"""What envd keeps on the engine: each project's current image, step layers, their use, and gc.

Selection is pure (`select_garbage`); the rest reconciles the store with the engine, so an
image removed behind envd's back simply disappears from the records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from envd.errors import EnvdError, NotFound
from envd.gateways.engine import Engine
from envd.gateways.store import ImageRow, ProjectRow, Store
from envd.model.plan import BuildPlan, make_plan
from envd.services.projects import Projects

STEP_REPOSITORY = "cache"  # under the home's namespace: NAMESPACE/cache:KEY


@dataclass(frozen=True)
class ImageEntry:
    image: str
    image_id: str
    project: str
    kind: str  # "project" or "step:<name>"
    key: str
    size_bytes: int  # a project image: all its layers; a step: its own layer
    created_at: float
    last_used_at: float
    in_use: bool  # a registered project's current lock (or current image) needs it
    owned_bytes: int = 0  # what it alone accounts for: layers are shared down the step chain


class Images:
    def __init__(
        self, store: Store, engine: Engine, projects: Projects, namespace: str = "envd"
    ) -> None:
        self._store = store
        self._engine = engine
        self._projects = projects
        self._namespace = namespace  # this envd home's repository prefix

    # ------------------------------------------------------------ the current image

    def current_image(self, row: ProjectRow) -> str | None:
        """The image matching the project's current lock, from files and the store only."""
        try:
            lock = self._projects.lock_state(row).current
        except EnvdError:
            return None
        if lock is None:
            return None
        tag = make_plan(row.name, lock, self._namespace).tag
        return tag if self._store.image(tag) is not None else None

    def record(self, row: ProjectRow, plan: BuildPlan, image_id: str) -> None:
        """A project image built (or received) for `plan`, now tagged `plan.tag`."""
        info = self._engine.inspect_image(plan.tag)
        self._store.record_image(
            plan.tag,
            image_id,
            row.name,
            "project",
            plan.final_key,
            plan.lock_hash,
            info.size if info else 0,
        )

    def built(self, plan: BuildPlan) -> ImageRow | None:
        """The recorded image of `plan` when the engine still has it (else forget it)."""
        record = self._store.image(plan.tag)
        if record is None:
            return None
        if self._engine.inspect_image(plan.tag) is None:
            self._store.drop_image(plan.tag)
            return None
        return record

    def touch(self, plan: BuildPlan) -> None:
        self._store.touch_image(plan.tag)
        self._store.touch_steps([s.key for s in plan.steps])

    def recorded(self, image: str) -> bool:
        return self._store.image(image) is not None

    def image_id(self, image: str) -> str:
        """The engine ID recorded for a tag (the tag itself when none is recorded)."""
        record = self._store.image(image)
        return record.image_id if record else image

    # ------------------------------------------------------------ listing and gc

    def needed_keys(self) -> set[str]:
        """Every step key of every registered project's current lock."""
        keys: set[str] = set()
        for row in self._store.projects():
            try:
                lock = self._projects.lock_state(row).lock
            except EnvdError:
                continue
            if lock is not None:
                keys.update(step.key for step in make_plan(row.name, lock, self._namespace).steps)
        return keys

    def entries(self) -> list[ImageEntry]:
        """What the store records and the engine still has; records of vanished images go."""
        needed = self.needed_keys()
        current = {row.image for row in self._store.projects() if row.image}
        steps: list[ImageEntry] = []
        for key, name, image_id, size, last_used in self._store.steps():
            if self._engine.inspect_image(image_id) is None:
                self._store.drop_step(key)
                continue
            steps.append(
                ImageEntry(
                    f"{self._namespace}/{STEP_REPOSITORY}:{key[:24]}",
                    image_id,
                    "",
                    f"step:{name}",
                    key,
                    size,
                    last_used,
                    last_used,
                    key in needed,
                    size,
                )
            )
        stepped = {e.image_id for e in steps}
        projects: list[ImageEntry] = []
        for row in self._store.images():
            if self._engine.inspect_image(row.image) is None:
                self._store.drop_image(row.image)
                continue
            projects.append(
                ImageEntry(
                    row.image,
                    row.image_id,
                    row.project,
                    row.kind,
                    row.cache_key,
                    row.size_bytes,
                    row.created_at,
                    row.last_used_at,
                    row.cache_key in needed or row.image in current,
                    0 if row.image_id in stepped else row.size_bytes,
                )
            )
        return projects + steps

    def collect_garbage(
        self, *, keep_storage: int = 0, keep_duration: float = 0.0, dry_run: bool = False
    ) -> list[ImageEntry]:
        chosen = select_garbage(self.entries(), keep_storage, keep_duration, time.time())
        if dry_run:
            return chosen
        return [entry for entry in chosen if self._remove(entry)]

    def remove(self, ref: str) -> list[str]:
        matches = [e for e in self.entries() if ref in (e.image, e.image_id, e.key)]
        if not matches:
            raise NotFound(f"envd has no image {ref}", hint="`envctl images` lists them")
        return [e.image for e in matches if self._remove(e)]

    def _remove(self, entry: ImageEntry) -> bool:
        try:
            self._engine.remove_image(entry.image)
        except EnvdError:
            return False  # still a parent of a kept image: the engine keeps the layers
        if entry.kind == "project":
            self._store.drop_image(entry.image)
        else:
            self._store.drop_step(entry.key)
        return True


def select_garbage(
    entries: list[ImageEntry], keep_storage: int, keep_duration: float, now: float
) -> list[ImageEntry]:
    """Unused entries to remove: older than keep_duration, then least recently used until
    what is left fits in keep_storage. With neither limit, every unused entry goes."""
    unused = sorted((e for e in entries if not e.in_use), key=lambda e: e.last_used_at)
    if not keep_storage and not keep_duration:
        return unused
    chosen = [e for e in unused if keep_duration and now - e.last_used_at > keep_duration]
    if keep_storage:
        total = sum(e.owned_bytes for e in entries) - sum(e.owned_bytes for e in chosen)
        for entry in unused:
            if total <= keep_storage:
                break
            if entry not in chosen:
                chosen.append(entry)
                total -= entry.owned_bytes
    return chosen
