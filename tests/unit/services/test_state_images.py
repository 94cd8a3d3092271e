"""The store and the engine agree: a recorded image is looked up before use, gc keeps what
containers run on and reports the bytes it freed as measured on the engine's layers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.config import Config
from envd.errors import EXIT_NOT_FOUND, EngineUnavailable, NotFound
from envd.events import EventBus
from envd.gateways.engine import ContainerInfo, ImageInfo, Mount
from envd.gateways.store import Store
from envd.model.plan import make_plan
from envd.progress import Progress
from envd.services.entering import EnterCall, Entering
from envd.services.images import EngineUsage, Images, layer_bytes
from envd.services.projects import Projects
from envd.services.runs import Runs
from envd.services.sharing import Sharing
from envd.services.warm import WarmContainers
from tests.unit.model.test_plan import NUMPY, SIX, lock
from tests.unit.services import test_entering as entering_world
from tests.unit.services.test_imagestore import FakeProjects, project, valid

# ------------------------------------------------------------ layer_bytes (pure)


def test_a_chain_of_images_counts_each_layer_once() -> None:
    base, venv, pkgs = ("b",), ("b", "v"), ("b", "v", "p")
    assert layer_bytes([(base, 100), (venv, 130), (pkgs, 200)]) == 200
    assert layer_bytes([(base, 100), (pkgs, 200)]) == 200
    assert layer_bytes([(pkgs, 200), (pkgs, 200)]) == 200  # two tags, one image


def test_siblings_share_their_parent() -> None:
    base = ("b",)
    images = [(base, 100), (("b", "x"), 150), (("b", "y"), 170)]
    assert layer_bytes(images) == 100 + 50 + 70
    # without the parent image, the shared part is taken as large as it can be
    assert layer_bytes(images[1:]) == 150 + 20
    assert layer_bytes([]) == 0


def test_what_a_removal_frees_is_never_overstated() -> None:
    a, b = (("l1", "l2"), 10), (("l1", "l3"), 12)
    freed = layer_bytes([a, b]) - layer_bytes([b])
    assert 0 <= freed <= 10


# ------------------------------------------------------------ an engine with layers


@dataclass
class LayeredEngine:
    """Images with layers and sizes, tags pointing at them, and containers on them."""

    images: dict[str, tuple[tuple[str, ...], int]] = field(default_factory=dict)  # id -> ...
    tags: dict[str, str] = field(default_factory=dict)  # tag -> id
    containers: list[ContainerInfo] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def add(self, image_id: str, layers: tuple[str, ...], size: int, *tags: str) -> None:
        self.images[image_id] = (layers, size)
        for tag in tags:
            self.tags[tag] = image_id

    def _id(self, ref: str) -> str | None:
        return ref if ref in self.images else self.tags.get(ref)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        image_id = self._id(ref)
        if image_id is None:
            return None
        layers, size = self.images[image_id]
        tags = tuple(t for t, i in self.tags.items() if i == image_id)
        return ImageInfo(image_id, tags, {}, size, (), layers)

    def image_exists(self, ref: str) -> bool:
        return self._id(ref) is not None

    def image_ids(self) -> set[str]:
        return set(self.images)

    def list_containers(self, label: str = "envd.managed") -> list[ContainerInfo]:
        return list(self.containers)

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        """Like the engine: a tag goes; the image goes with its last tag, unless a child
        image (a longer layer list) or a container still needs it."""
        image_id = self._id(ref)
        if image_id is None:
            return False
        self.removed.append(ref)
        self.tags.pop(ref, None)
        self._prune(image_id)
        return True

    def _prune(self, image_id: str) -> None:
        layers, _ = self.images[image_id]
        tagged = image_id in self.tags.values()
        child = any(
            len(other) > len(layers) and other[: len(layers)] == layers
            for i, (other, _) in self.images.items()
            if i != image_id
        )
        used = any(self._id(c.image) == image_id for c in self.containers)
        if not (tagged or child or used):
            del self.images[image_id]
            parent = [
                i
                for i, (other, _) in self.images.items()
                if len(other) < len(layers) and layers[: len(other)] == other
            ]
            for p in parent:
                self._prune(p)


@dataclass
class World:
    store: Store
    engine: LayeredEngine
    images: Images
    projects: FakeProjects


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = Store(tmp_path / "envd.db")
    engine = LayeredEngine()
    projects = FakeProjects(store, EventBus())
    images = Images(store, engine, projects, usage=EngineUsage(engine))  # type: ignore[arg-type]
    yield World(store, engine, images, projects)
    store.close()


def built(world: World, tmp_path: Path, name: str, packages: tuple[Any, ...], size: int) -> str:
    """A project built on the engine and recorded: its steps chain on one base layer."""
    the_lock = lock(packages)
    row = project(world, tmp_path, name, the_lock)
    plan = make_plan(name, valid(the_lock))
    layers: tuple[str, ...] = ("base-layer",)
    parent = ""
    for n, step in enumerate(plan.steps[1:], start=1):
        layers = (*layers, f"{name}-{step.name}")
        image_id = f"sha256:{name}-{step.key[:12]}"
        step_size = 100 + n * size // len(plan.steps)
        world.engine.add(image_id, layers, step_size, f"envd/cache:{step.key[:24]}")
        world.store.record_step(step.key, parent, step.name, image_id, 999_999)  # wrong on purpose
        parent = step.key
    world.engine.add("sha256:base", ("base-layer",), 100, the_lock.base.reference)
    final_id = f"sha256:{name}-{plan.steps[-1].key[:12]}"
    world.engine.tags[plan.tag] = final_id
    world.store.record_image(plan.tag, final_id, name, "project", plan.final_key, "", 999_999)
    world.store.set_project_image(name, plan.tag, "")
    assert row is not None
    return plan.tag


def test_current_image_forgets_an_image_removed_behind_envds_back(
    world: World, tmp_path: Path
) -> None:
    tag = built(world, tmp_path, "p", (NUMPY,), 300)
    row = world.store.project_by_name("p")
    assert row is not None and world.images.current_image(row) == tag
    del world.engine.tags[tag]  # docker rmi
    assert world.images.current_image(row) is None
    assert world.store.image(tag) is None


def test_an_engine_that_does_not_answer_loses_no_record(world: World, tmp_path: Path) -> None:
    tag = built(world, tmp_path, "p", (NUMPY,), 300)

    def down(ref: str) -> ImageInfo | None:
        raise EngineUnavailable("the container engine does not answer (test)")

    world.engine.inspect_image = down  # type: ignore[method-assign]
    assert world.images.on_engine(tag)
    assert world.store.image(tag) is not None


def test_share_output_of_a_removed_image_says_not_built(world: World, tmp_path: Path) -> None:
    tag = built(world, tmp_path, "p", (NUMPY,), 300)
    del world.engine.tags[tag]
    sharing = Sharing(world.engine, world.projects, world.images, None, EventBus())  # type: ignore[arg-type]
    row = world.store.project_by_name("p")
    assert row is not None
    with pytest.raises(NotFound, match="no image for its current lock") as caught:
        sharing.save(row, tmp_path / "out.tar.gz", lambda p: None)
    assert caught.value.exit_code == EXIT_NOT_FOUND
    assert "envctl build p" in (caught.value.hint or "")
    assert not (tmp_path / "out.tar.gz").exists()


def remove_project(world: World, name: str) -> None:
    world.store.remove_project(name)


def test_gc_keeps_an_unneeded_image_a_container_runs_on(world: World, tmp_path: Path) -> None:
    tag = built(world, tmp_path, "p", (NUMPY,), 300)
    remove_project(world, "p")  # nothing needs it any more ...
    container = ContainerInfo("c1", "envd-p", tag, "running", {"envd.managed": "1"})
    world.engine.containers.append(container)  # ... but a warm container runs on it
    entries = {e.image: e for e in world.images.entries()}
    assert entries[tag].in_use
    removed = world.images.collect_garbage()
    assert tag not in {e.image for e in removed}
    assert world.engine.inspect_image(tag) is not None
    assert world.store.image(tag) is not None
    # the tag moved on (a rebuild): the container's image is still found by its ID
    world.engine.containers[0] = ContainerInfo("c1", "envd-p", world.engine.tags[tag], "exited", {})
    assert world.engine.tags[tag] in world.images.container_image_ids()


def test_gc_reports_the_bytes_the_engine_freed_not_the_records(
    world: World, tmp_path: Path
) -> None:
    keep = built(world, tmp_path, "keep", (SIX,), 300)
    gone = built(world, tmp_path, "gone", (NUMPY,), 600)
    remove_project(world, "gone")
    before = layer_bytes(world.engine.images.values())
    removed = world.images.collect_garbage()
    after = layer_bytes(world.engine.images.values())
    assert gone in {e.image for e in removed}
    assert keep not in {e.image for e in removed}
    freed = sum(e.owned_bytes for e in removed)
    assert freed == before - after > 0
    assert freed < 999_999  # the recorded sizes are wrong on purpose
    assert "sha256:base" in world.engine.images  # shared with `keep`: not freed, not counted


def test_gc_without_engine_usage_trusts_the_records(tmp_path: Path) -> None:
    store = Store(tmp_path / "envd.db")
    engine = LayeredEngine()
    world = World(store, engine, Images(store, engine, FakeProjects(store, EventBus())), None)  # type: ignore[arg-type]
    try:
        built(world, tmp_path, "gone", (NUMPY,), 600)
        remove_project(world, "gone")
        assert world.images.container_image_ids() == set()
        assert world.images.collect_garbage()
    finally:
        store.close()


# ------------------------------------------------------------ enter when the image went


class VanishingEngine(entering_world.Engine):
    """test_entering's fake engine, whose images can be removed behind envd's back."""

    def __init__(self) -> None:
        super().__init__()
        self.present: set[str] = set()
        self.gone_at_start: set[str] = set()  # present at the look-up, gone at the start

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return ImageInfo(ref, (ref,), {}, 1, (), ()) if ref in self.present else None

    def start_container(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
        workdir: str = "",
        device_requests: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
    ) -> ContainerInfo:
        if image in self.gone_at_start:  # gone by tag and by ID (warm starts by ID)
            self.present -= self.gone_at_start
            self.gone_at_start = set()
        if image not in self.present:
            raise NotFound(f"image {image} is not on the engine", hint="build it first")
        return super().start_container(
            name,
            image,
            command,
            env=env,
            mounts=mounts,
            labels=labels,
            workdir=workdir,
            device_requests=device_requests,
            ports=ports,
        )


class BuilderOnEngine(entering_world.Builder):
    """test_entering's fake builder, whose images land on the engine."""

    engine: VanishingEngine | None = None

    def build(self, row: Any, progress: Any) -> Any:
        outcome = super().build(row, progress)
        assert self.engine is not None
        self.engine.present.update((outcome.image, outcome.image_id))
        return outcome


def test_enter_rebuilds_an_image_removed_before_its_container_starts(tmp_path: Path) -> None:
    """test_entering's world, with an engine whose image goes between the look-up and the
    container's start (the race current_image cannot close): enter builds it again."""
    project_dir = tmp_path / "proj"
    project_dir.mkdir()
    (project_dir / "envd.yaml").write_text(entering_world.SPEC)
    engine = VanishingEngine()
    store = Store(tmp_path / "home" / "envd.db")
    events = entering_world.Events()
    projects = Projects(store, events)
    builder = BuilderOnEngine(store)
    builder.engine = engine
    warm = WarmContainers(engine, events, Config, "test-owner")  # type: ignore[arg-type]
    entering = Entering(
        projects,
        entering_world.Images(store, engine, projects, builder),  # type: ignore[arg-type]
        builder,  # type: ignore[arg-type]
        warm,
        entering_world.Fingerprints(),  # type: ignore[arg-type]
        Runs(store),
        entering_world.Host(entering_world.host(0)),  # type: ignore[arg-type]
        engine,  # type: ignore[arg-type]
        events,
    )
    progress: list[Progress] = []
    call = EnterCall(str(project_dir), ("true",))
    try:
        first = entering.prepare(call, progress.append)
        assert builder.builds == ["proj"] and first.started
        for cid in list(engine.containers):
            engine.remove_container(cid)  # the container went ...
        engine.gone_at_start = set(engine.present)  # ... and its image: `docker rmi` behind
        # envd's back, just after enter looked it up
        again = entering.prepare(call, progress.append)
        assert builder.builds == ["proj", "proj"]  # built again instead of failing
        assert again.started and again.container_id != first.container_id
        assert any("no longer on the engine" in p.message for p in progress)
    finally:
        entering.wait_provenance()
        warm.close()
        store.close()
