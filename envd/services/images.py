"""What envd keeps on the engine: each project's current image, step layers, their use, and gc.

Selection is pure (`select_garbage`); the rest reconciles the store with the engine, so an
image removed behind envd's back simply disappears from the records. The store never has the
last word on what the engine holds: a recorded image is looked up on the engine before it is
used, gc keeps every image a container (warm or not) runs on, and what gc reports as freed is
measured on the engine's layers (`layer_bytes`), not taken from the records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from envd.errors import EngineUnavailable, EnvdError, NotFound
from envd.gateways.engine import Engine
from envd.gateways.store import ImageRow, ProjectRow, Store
from envd.model import names
from envd.model.plan import BuildPlan
from envd.services.planning import plan_for
from envd.services.projects import Projects, ProjectSnapshot

STEP_REPOSITORY = names.CACHE_REPOSITORY  # under the home's namespace: NAMESPACE/cache:KEY

log = logging.getLogger(__name__)

Layers = tuple[str, ...]


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


class EngineUsage:
    """What the engine itself says about its images: which ones containers run on, and the
    layers and sizes of all of them (so gc keeps the former and measures what it frees)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def container_image_ids(self) -> set[str]:
        """The image ID under every container envd's engine labels name, running or stopped:
        asked of the engine, since a tag may have moved on since the container started."""
        ids: set[str] = set()
        for container in self._engine.list_containers():
            info = self._engine.inspect_image(container.image)
            if info is not None:
                ids.add(info.id)
        return ids

    def image_ids(self) -> set[str]:
        return self._engine.image_ids()

    def snapshot(self) -> dict[str, tuple[Layers, int]]:
        """(layers, size) of every image on the engine, by ID."""
        found: dict[str, tuple[Layers, int]] = {}
        for image_id in self._engine.image_ids():
            info = self._engine.inspect_image(image_id)
            if info is not None:
                found[image_id] = (info.layers or (f"image:{info.id}",), info.size)
        return found


class Images:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        projects: Projects,
        namespace: str = "envd",
        usage: EngineUsage | None = None,
    ) -> None:
        """`usage` (the daemon always gives one) lets gc keep what containers run on and
        report the bytes it freed as measured; without it, gc trusts the records."""
        self._store = store
        self._engine = engine
        self._projects = projects
        self._namespace = namespace  # this envd home's repository prefix
        self._usage = usage

    # ------------------------------------------------------------ the current image

    def current_image(
        self,
        row: ProjectRow,
        *,
        check_engine: bool = True,
        snapshot: ProjectSnapshot | None = None,
    ) -> str | None:
        """The image matching the project's current lock, when the engine still has it: a
        record of one removed behind envd's back (`docker rmi`) is forgotten. The engine is
        asked only when the store records one (a fresh project costs no engine call), and
        not at all with check_engine=False (the caller asks on_engine itself, later)."""
        try:  # (the caller's read of the project, when it made one for this request)
            lock = (snapshot or self._projects.snapshot(row)).current
        except EnvdError:
            return None
        if lock is None:
            return None
        try:
            tag = plan_for(row, lock, self._namespace).tag
        except EnvdError:  # a setup file or the project package unreadable: build to say so
            return None
        if self._store.image(tag) is None or (check_engine and not self.on_engine(tag)):
            return None
        return tag

    def on_engine(self, image: str) -> bool:
        """Whether the engine has a recorded image; its record goes when it does not. An
        engine that does not answer cannot say: the record stands, and whatever uses the
        image next fails with the engine's own error (exit 12), not a record lost."""
        try:
            if self._engine.inspect_image(image) is not None:
                return True
        except EngineUnavailable:
            return True
        if self._store.image(image) is not None:
            log.warning("%s was removed from the engine behind envd's back; forgetting it", image)
            self._store.drop_image(image)
        return False

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
                if lock is not None:
                    keys.update(step.key for step in plan_for(row, lock, self._namespace).steps)
            except EnvdError:  # an unreadable project keeps nothing alive, breaks nothing else
                continue
        return keys

    def container_image_ids(self) -> set[str]:
        return self._usage.container_image_ids() if self._usage is not None else set()

    def entries(self) -> list[ImageEntry]:
        """What the store records and the engine still has; records of vanished images go.
        An image a container runs on is in use, whatever the locks say."""
        needed = self.needed_keys()
        current = {row.image for row in self._store.projects() if row.image}
        under_containers = self.container_image_ids()
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
                    key in needed or image_id in under_containers,
                    size,
                )
            )
        stepped = {e.image_id for e in steps}
        projects: list[ImageEntry] = []
        for row in self._store.images():
            info = self._engine.inspect_image(row.image)
            if info is None:
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
                    row.cache_key in needed
                    or row.image in current
                    or info.id in under_containers
                    or row.image_id in under_containers,
                    0 if row.image_id in stepped else row.size_bytes,
                )
            )
        return projects + steps

    def collect_garbage(
        self, *, keep_storage: int = 0, keep_duration: float = 0.0, dry_run: bool = False
    ) -> list[ImageEntry]:
        """Remove what `select_garbage` chooses. With the engine's usage, each removed entry's
        owned_bytes is then what its removal freed: the layers no image on the engine holds
        any more, measured before and after (not the recorded sizes)."""
        chosen = select_garbage(self.entries(), keep_storage, keep_duration, time.time())
        if dry_run:
            return chosen
        if self._usage is None:
            return [entry for entry in chosen if self._remove(entry)]
        if chosen:  # a container may have started since entries() looked
            under_containers = self._usage.container_image_ids()
            chosen = [e for e in chosen if self._id_of(e) not in under_containers]
        before = self._usage.snapshot()
        total = layer_bytes(before.values())
        freed_so_far = 0
        removed: list[ImageEntry] = []
        for entry in chosen:
            if not self._remove(entry):
                continue
            remaining = self._usage.image_ids()
            freed = total - layer_bytes(v for k, v in before.items() if k in remaining)
            removed.append(replace(entry, owned_bytes=max(freed - freed_so_far, 0)))
            freed_so_far = max(freed, freed_so_far)
        return removed

    def _id_of(self, entry: ImageEntry) -> str:
        info = self._engine.inspect_image(entry.image)
        return info.id if info is not None else entry.image_id

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


def layer_bytes(images: Iterable[tuple[Layers, int]]) -> int:
    """The bytes the engine stores for these images, each given as (layer diff IDs, size):
    a layer shared by several images counts once.

    An image's size is the sum of its layers. Every prefix of an image's layer list is a
    layer stack; one that is itself an image has a known size, and one that is not is taken to
    be as large as the smallest image above it (so shared bytes are never counted twice, and
    what a removal frees is never overstated). The total is the sum, over every stack, of its
    size less its parent stack's."""
    sizes: dict[Layers, int] = {}
    for layers, size in images:
        if layers:
            sizes[layers] = max(sizes.get(layers, 0), size)
    stacks: dict[Layers, int] = {}
    for layers, size in sizes.items():
        for depth in range(1, len(layers) + 1):
            prefix = layers[:depth]
            known = sizes.get(prefix)
            stacks[prefix] = known if known is not None else min(stacks.get(prefix, size), size)
    total = 0
    for prefix, size in stacks.items():
        parent = stacks.get(prefix[:-1], 0) if len(prefix) > 1 else 0
        total += max(size - parent, 0)
    return total


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
