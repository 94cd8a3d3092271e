"""Image and step records: gc selection (pure), and the store kept honest about the engine."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from envd.events import EventBus
from envd.gateways.engine import ImageInfo
from envd.gateways.projectfiles import read_lock
from envd.gateways.store import ProjectRow, Store
from envd.model.host import HostInfo
from envd.model.lockfile import LockFile, dumps, hash_inputs
from envd.model.plan import make_plan
from envd.progress import Progress
from envd.services.builder import Builder
from envd.services.images import ImageEntry, Images, select_garbage
from envd.services.projects import LockState, Projects, lock_path
from envd.services.steps import StepRunner
from tests.unit.model.test_plan import NUMPY, SIX, lock


def entry(name: str, used: float, size: int, in_use: bool = False) -> ImageEntry:
    return ImageEntry(
        name, "sha256:" + name, "p", "project", name, size, used, used, in_use, owned_bytes=size
    )


ENTRIES = [
    entry("old", 100, 10),
    entry("mid", 200, 10),
    entry("new", 300, 10),
    entry("live", 50, 10, in_use=True),
]


def test_without_limits_every_unused_image_goes() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 0, 0, 400)] == ["old", "mid", "new"]


def test_keep_duration() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 0, 150, 400)] == ["old", "mid"]


def test_keep_storage_removes_least_recently_used_first() -> None:
    assert [e.image for e in select_garbage(ENTRIES, 25, 0, 400)] == ["old", "mid"]


def test_keep_storage_and_duration_together() -> None:
    # "old" is too old; then "mid" goes to fit 20 bytes (with "live"); "new" stays.
    assert [e.image for e in select_garbage(ENTRIES, 20, 250, 400)] == ["old", "mid"]


def test_keep_storage_counts_shared_layers_once() -> None:
    """A project tag owns nothing beyond its steps' layers: dropping it frees no space."""
    tag = replace(entry("tag", 10, 500), owned_bytes=0)
    layer = entry("layer", 20, 10)
    assert [e.image for e in select_garbage([tag, layer], 5, 0, 400)] == ["tag", "layer"]
    assert select_garbage([tag, layer], 10, 0, 400) == []


def test_what_a_lock_needs_is_never_chosen() -> None:
    assert all(e.image != "live" for e in select_garbage(ENTRIES, 1, 1, 10_000))


# ------------------------------------------------------------ with a store and a fake engine


class FakeImages:
    """Only what the builder's cache checks and gc use; no containers ever run."""

    def __init__(self) -> None:
        self.present: set[str] = set()
        self.removed: list[str] = []

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return ImageInfo(ref, (), {}, 1, (), ()) if ref in self.present else None

    def image_exists(self, ref: str) -> bool:
        return ref in self.present

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        self.removed.append(ref)
        self.present.discard(ref)
        return True


def valid(the_lock: LockFile) -> LockFile:
    return replace(the_lock, inputs_hash=hash_inputs(the_lock.inputs))


class FakeProjects(Projects):
    """Projects that hold only an envd.lock (no envd.yaml): the lock is taken as current."""

    def spec(self, row: ProjectRow) -> Any:
        return SimpleSpec()

    def lock_state(self, row: ProjectRow, spec: Any = None) -> LockState:
        path = lock_path(row)
        return LockState(path, read_lock(path), ())


@dataclass(frozen=True)
class SimpleSpec:
    gpu: str = "auto"
    cuda: str | None = None


CPU_HOST = HostInfo("test", "x86_64", 2, 1 << 30, "6.1", "Debian", (), "", "", "")


@dataclass(frozen=True)
class Host:
    host: HostInfo = CPU_HOST


@dataclass(frozen=True)
class Locker:
    def ensure_lock(
        self, row: ProjectRow, progress: Any, write: bool = True, snapshot: Any = None
    ) -> LockFile | None:
        return read_lock(lock_path(row))


@dataclass
class World:
    store: Store
    engine: FakeImages
    images: Images
    builder: Builder


@pytest.fixture
def app(tmp_path: Path) -> Any:
    store = Store(tmp_path / "state.db")
    engine = FakeImages()
    events = EventBus()
    projects = FakeProjects(store, events)
    images = Images(store, engine, projects)  # type: ignore[arg-type]
    steps = StepRunner(engine, store, "owner", tmp_path / "debian")  # type: ignore[arg-type]
    builder = Builder(
        projects,
        Locker(),  # type: ignore[arg-type]
        images,
        steps,
        None,  # type: ignore[arg-type]  # fingerprints: nothing is built here
        None,  # type: ignore[arg-type]  # sharing: no lock names a shared image
        Host(),  # type: ignore[arg-type]
        engine,  # type: ignore[arg-type]
        events,
    )
    yield World(store, engine, images, builder)
    store.close()


def project(app: Any, tmp_path: Path, name: str, the_lock: LockFile) -> Any:
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    (path / "envd.lock").write_text(dumps(valid(the_lock)))
    return app.store.project_by_name(name) or app.store.add_project(name, str(path))


def record_built(app: Any, name: str, the_lock: LockFile) -> None:
    """What a finished build leaves: every step recorded, the project image tagged."""
    plan = make_plan(name, valid(the_lock))
    parent = ""
    for step in plan.steps[1:]:
        image_id = f"sha256:{step.key}"
        app.store.record_step(step.key, parent, step.name, image_id, 100)
        app.engine.present.add(image_id)
        app.engine.present.add(f"envd/cache:{step.key[:24]}")
        parent = step.key
    app.store.record_image(plan.tag, image_id, name, "project", plan.final_key, "", 1000)
    app.engine.present.add(plan.tag)
    app.engine.present.add(the_lock.base.reference)


def test_a_step_whose_image_is_gone_is_not_cached_and_forgotten(app: Any, tmp_path: Path) -> None:
    the_lock = lock((NUMPY,))
    row = project(app, tmp_path, "p", the_lock)
    record_built(app, "p", the_lock)
    packages = next(s for s in make_plan("p", valid(the_lock)).steps if s.name == "packages")
    app.engine.present.discard(f"sha256:{packages.key}")  # `docker rmi` behind envd's back
    app.engine.present.discard(make_plan("p", valid(the_lock)).tag)
    outcome = app.builder.build(row, lambda p: None, dry_run=True)
    cached = {s.name: s.cached for s in outcome.steps}
    assert cached == {"base": True, "venv": True, "packages": False, "metadata": True}
    assert app.store.step_image(packages.key) is None
    assert not outcome.cached


def test_a_noop_build_runs_nothing(app: Any, tmp_path: Path) -> None:
    the_lock = lock((NUMPY,))
    row = project(app, tmp_path, "p", the_lock)
    record_built(app, "p", the_lock)
    seen: list[Progress] = []
    outcome = app.builder.build(row, seen.append)  # FakeImages has no run(): nothing may run
    assert outcome.cached and all(s.cached for s in outcome.steps)
    assert outcome.image == make_plan("p", valid(the_lock)).tag
    assert app.store.project_by_name("p").state == "ready"


def test_dry_run_of_a_changed_lock_reuses_everything_before_packages(
    app: Any, tmp_path: Path
) -> None:
    row = project(app, tmp_path, "p", lock((NUMPY,)))
    record_built(app, "p", lock((NUMPY,)))
    project(app, tmp_path, "p", lock((NUMPY, SIX)))
    outcome = app.builder.build(row, lambda p: None, dry_run=True)
    cached = {s.name: s.cached for s in outcome.steps}
    assert cached == {"base": True, "venv": True, "packages": False, "metadata": False}


def test_gc_keeps_what_current_locks_need_and_drops_vanished_records(
    app: Any, tmp_path: Path
) -> None:
    old, new = lock((NUMPY,)), lock((NUMPY, SIX))
    project(app, tmp_path, "p", old)
    record_built(app, "p", old)
    project(app, tmp_path, "p", new)
    record_built(app, "p", new)
    app.store.set_project_image("p", make_plan("p", valid(new)).tag, "")
    orphan_tag = make_plan("p", valid(old)).tag

    entries = {e.image: e for e in app.images.entries()}
    assert not entries[orphan_tag].in_use and entries[make_plan("p", valid(new)).tag].in_use
    assert entries[orphan_tag].owned_bytes == 0  # its layers belong to its steps

    removed = {e.image for e in app.images.collect_garbage()}
    assert orphan_tag in removed
    new_keys = {s.key for s in make_plan("p", valid(new)).steps}
    assert not any(e.key in new_keys for e in app.images.collect_garbage(dry_run=True))
    assert all(app.store.step_image(k) is not None for k in new_keys if k != _base_key(new))
    assert app.store.image(orphan_tag) is None

    app.engine.present.discard(make_plan("p", valid(new)).tag)  # removed behind envd's back
    assert make_plan("p", valid(new)).tag not in {e.image for e in app.images.entries()}
    assert app.store.image(make_plan("p", valid(new)).tag) is None


def test_the_image_a_project_points_at_is_kept_when_its_lock_moved_on(
    app: Any, tmp_path: Path
) -> None:
    """After a failed build the previous image stays usable: gc does not take it either."""
    old = lock((NUMPY,))
    project(app, tmp_path, "p", old)
    record_built(app, "p", old)
    app.store.set_project_image("p", make_plan("p", valid(old)).tag, "")
    project(app, tmp_path, "p", lock((SIX,)))  # locked again, not built (or its build failed)
    removed = {e.image for e in app.images.collect_garbage()}
    assert make_plan("p", valid(old)).tag not in removed


def _base_key(the_lock: LockFile) -> str:
    return make_plan("p", valid(the_lock)).steps[0].key


# ------------------------------------------------------------ up to date (the build-check)


def test_up_to_date_answers_what_a_noop_build_answers(app: Any, tmp_path: Path) -> None:
    the_lock = lock((NUMPY,))
    row = project(app, tmp_path, "p", the_lock)
    record_built(app, "p", the_lock)
    answer = app.builder.up_to_date(row)
    built = app.builder.build(row, lambda p: None)
    assert answer is not None and answer.cached and built.cached
    assert (answer.image, answer.image_id) == (built.image, built.image_id)
    assert app.store.project_by_name("p").image == built.image


def test_up_to_date_reads_envd_lock_again_each_time(app: Any, tmp_path: Path) -> None:
    the_lock = lock((NUMPY,))
    row = project(app, tmp_path, "p", the_lock)
    record_built(app, "p", the_lock)
    assert app.builder.up_to_date(row) is not None
    project(app, tmp_path, "p", lock((NUMPY, SIX)))  # another pin: its image is not built
    assert app.builder.up_to_date(row) is None
    project(app, tmp_path, "p", the_lock)  # back: the recorded image answers again
    assert app.builder.up_to_date(row) is not None
    lock_path(row).unlink()  # no envd.lock: a build locks first
    assert app.builder.up_to_date(row) is None


def test_up_to_date_is_not_answered_for_an_image_gone_from_the_engine(
    app: Any, tmp_path: Path
) -> None:
    the_lock = lock((NUMPY,))
    row = project(app, tmp_path, "p", the_lock)
    record_built(app, "p", the_lock)
    app.engine.present.discard(make_plan("p", valid(the_lock)).tag)  # `docker rmi`
    assert app.builder.up_to_date(row) is None


def test_up_to_date_sees_a_changed_file_a_setup_step_reads(app: Any, tmp_path: Path) -> None:
    base = lock((NUMPY,), setup=("bash postBuild",))
    the_lock = replace(base, inputs=replace(base.inputs, setup_files=(("postBuild",),)))
    row = project(app, tmp_path, "p", the_lock)
    script = Path(row.path) / "postBuild"
    script.write_text("echo one\n")
    plan = app.builder.plan(row, read_lock(lock_path(row)))  # with the file's digest
    app.store.record_image(plan.tag, "sha256:" + "f" * 64, "p", "project", plan.final_key, "", 1)
    app.engine.present.add(plan.tag)
    assert app.builder.up_to_date(row) is not None
    script.write_text("echo two\n")  # the same envd.lock: the setup step's input changed
    assert app.builder.up_to_date(row) is None
    script.write_text("echo one\n")
    assert app.builder.up_to_date(row) is not None
