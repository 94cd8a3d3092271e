"""What envd keeps on the engine: images and step layers, their use, and garbage collection.

Selection is pure (`select_garbage`); the rest reconciles the store with the engine, so an
image removed behind envd's back simply disappears from the records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envd.errors import EnvdError, NotFound
from envd.gateways.projectfiles import read_lock
from envd.model.plan import make_plan
from envd.services.locker import lock_path

if TYPE_CHECKING:
    from envd.daemon.wiring import App

STEP_REPOSITORY = "envd/cache"


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


def needed_keys(app: App) -> set[str]:
    """Every step key of every registered project's current lock."""
    keys: set[str] = set()
    for row in app.store.projects():
        try:
            lock = read_lock(lock_path(row))
        except EnvdError:
            continue
        if lock is not None:
            keys.update(step.key for step in make_plan(row.name, lock).steps)
    return keys


def list_images(app: App) -> list[ImageEntry]:
    """What the store records and the engine still has; records of vanished images are dropped."""
    needed = needed_keys(app)
    current = {row.image for row in app.store.projects() if row.image}
    steps: list[ImageEntry] = []
    for key, name, image_id, size, last_used in app.store.steps():
        if app.engine.inspect_image(image_id) is None:
            app.store.drop_step(key)
            continue
        steps.append(
            ImageEntry(
                f"{STEP_REPOSITORY}:{key[:24]}",
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
    for row in app.store.images():
        if app.engine.inspect_image(row.image) is None:
            app.store.drop_image(row.image)
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


def _remove(app: App, entry: ImageEntry) -> bool:
    try:
        app.engine.remove_image(entry.image)
    except EnvdError:
        return False  # still a parent of a kept image: the engine keeps the layers
    if entry.kind == "project":
        app.store.drop_image(entry.image)
    else:
        app.store.drop_step(entry.key)
    return True


def collect_garbage(
    app: App, *, keep_storage: int = 0, keep_duration: float = 0.0, dry_run: bool = False
) -> list[ImageEntry]:
    chosen = select_garbage(list_images(app), keep_storage, keep_duration, time.time())
    if dry_run:
        return chosen
    return [entry for entry in chosen if _remove(app, entry)]


def remove_image(app: App, ref: str) -> list[str]:
    matches = [e for e in list_images(app) if ref in (e.image, e.image_id, e.key)]
    if not matches:
        raise NotFound(f"envd has no image {ref}", hint="`envctl images` lists them")
    return [e.image for e in matches if _remove(app, e)]
