"""Re-sharing an unchanged image asks the registry and moves nothing; anything the registry
lacks, or cannot say, goes through the engine's push as before."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from envd.errors import NotFound, RegistryError
from envd.events import EventBus
from envd.gateways.engine import ImageInfo, PushResult
from envd.gateways.registry import DOCKER_MANIFEST, Repository
from envd.services.sharing import Sharing

REPO = "127.0.0.1:5000/team/app"
CONFIG = "sha256:" + "c" * 64
LAYERS = ["sha256:" + "1" * 64, "sha256:" + "2" * 64]


def manifest(config: str = CONFIG) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"digest": config, "size": 10},
            "layers": [{"digest": d, "size": 10} for d in LAYERS],
        }
    ).encode()


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Registry:
    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}  # by tag and by digest
        self.blobs = {CONFIG, *LAYERS}
        self.put: list[str] = []
        self.refuse = False

    def holds(self, body: bytes, tag: str) -> None:
        self.manifests[tag] = self.manifests[digest_of(body)] = body

    def get_manifest(self, repository: Repository, reference: str) -> tuple[bytes, str] | None:
        assert str(repository) == REPO
        if self.refuse:
            raise RegistryError(f"{repository} refused envd's the registry access (HTTP 401)")
        body = self.manifests.get(reference)
        return (body, digest_of(body)) if body is not None else None

    def has_blob(self, repository: Repository, digest: str) -> bool:
        return digest in self.blobs

    def put_manifest(self, repository: Repository, tag: str, body: bytes, media: str) -> str:
        assert media == DOCKER_MANIFEST
        self.put.append(tag)
        self.manifests[tag] = body
        return digest_of(body)


@dataclass
class Engine:
    repo_digests: tuple[str, ...]
    pushes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tagged: tuple[str, ...] = ()
    inspected: int = 0

    def inspect_image(self, reference: str) -> ImageInfo:
        self.inspected += 1
        return ImageInfo(CONFIG, ("envd/app:1", *self.tagged), {}, 1, self.repo_digests, ())

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tags.append(f"{repository}:{tag}")

    def push(self, reference: str, on_progress: Any = None) -> PushResult:
        self.pushes.append(reference)
        return PushResult("sha256:" + "e" * 64, pushed=2, skipped=0)


class Images:
    def current_image(self, row: Any, check_engine: bool = True) -> str:
        return "envd/app:1"


@dataclass(frozen=True)
class Row:
    name: str = "app"


class Projects:
    def resolve(self, ref: str) -> Row:
        if ref != "app":
            raise NotFound(f"no project {ref!r}")
        return Row()


class Published(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, str, str, str]] = []

    def publish(self, kind: str, project: str = "", message: str = "", **fields: str) -> None:
        self.published.append((kind, project, message, fields["pushed"]))


def sharing_of(engine: Engine, registry: Registry | None, events: EventBus | None = None) -> Any:
    return Sharing(
        engine,  # type: ignore[arg-type]
        Projects(),  # type: ignore[arg-type]
        Images(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        events or EventBus(),
        registry=registry,  # type: ignore[arg-type]
    )


def share(engine: Engine, registry: Registry | None, to: str = f"{REPO}:v1") -> Any:
    return sharing_of(engine, registry).push(Row(), to, False, lambda p: None)


def test_an_image_the_registry_holds_under_the_tag_is_not_pushed() -> None:
    registry, body = Registry(), manifest()
    registry.holds(body, "v1")
    engine = Engine((f"{REPO}@{digest_of(body)}",))
    shared = share(engine, registry)
    assert engine.pushes == [] and registry.put == []
    assert (shared.reference, shared.pushed, shared.skipped) == (
        f"{REPO}@{digest_of(body)}",
        0,
        2,
    )
    assert engine.tags == [f"{REPO}:v1"]


def test_a_new_tag_of_an_image_the_registry_holds_moves_only_the_manifest() -> None:
    registry, body = Registry(), manifest()
    registry.holds(body, "v1")
    engine = Engine((f"{REPO}@{digest_of(body)}",))
    shared = share(engine, registry, f"{REPO}:v2")
    assert engine.pushes == [] and registry.put == ["v2"]
    assert shared.digest == digest_of(body) and shared.pushed == 0


def test_a_missing_blob_another_image_a_refusal_or_no_digest_push_through_the_engine() -> None:
    body = manifest()
    lacking = Registry()
    lacking.holds(body, "v1")
    lacking.blobs.discard(LAYERS[1])
    other = Registry()
    other.holds(manifest(config="sha256:" + "d" * 64), "v1")
    refusing = Registry()
    refusing.holds(body, "v1")
    refusing.refuse = True
    for registry, digests in (
        (lacking, (f"{REPO}@{digest_of(body)}",)),
        (other, (f"{REPO}@{digest_of(manifest(config='sha256:' + 'd' * 64))}",)),
        (refusing, (f"{REPO}@{digest_of(body)}",)),
        (Registry(), (f"{REPO}@{digest_of(body)}",)),  # the registry was emptied
        (lacking, ()),  # never pushed from this engine
        (lacking, (f"127.0.0.1:5000/elsewhere@{digest_of(body)}",)),
    ):
        engine = Engine(digests)
        shared = share(engine, registry)
        assert engine.pushes == [f"{REPO}:v1"]
        assert (shared.digest, shared.pushed) == ("sha256:" + "e" * 64, 2)
        assert registry.put == []


def test_without_a_registry_client_or_for_a_hub_name_the_engine_pushes() -> None:
    body = manifest()
    engine = Engine((f"{REPO}@{digest_of(body)}", f"team/app@{digest_of(body)}"))
    share(engine, None)
    registry = Registry()
    registry.holds(body, "v1")
    share(engine, registry, "team/app:v1")
    assert engine.pushes == [f"{REPO}:v1", "team/app:v1"]


# ---------------------------------------------------------------- the enter socket's share-check


def test_an_unchanged_share_is_done_and_recorded_without_the_engines_push() -> None:
    registry, body = Registry(), manifest()
    registry.holds(body, "v1")
    engine, events = Engine((f"{REPO}@{digest_of(body)}",)), Published()
    answer = sharing_of(engine, registry, events).push_unchanged("app", f"{REPO}:v2")
    assert answer is not None
    shared, said = answer
    assert (shared.reference, shared.pushed, shared.skipped, shared.pinned) == (
        f"{REPO}@{digest_of(body)}",
        0,
        2,
        False,
    )
    assert said == f"{REPO}:v2 is envd/app:1 already: nothing to push"
    assert engine.pushes == [] and engine.tags == [f"{REPO}:v2"] and registry.put == ["v2"]
    assert events.published == [("image.shared", "app", f"{REPO}@{digest_of(body)}", "0")]


def test_a_share_with_anything_to_move_or_say_is_left_to_grpc() -> None:
    body = manifest()
    lacking = Registry()
    lacking.holds(body, "v1")
    lacking.blobs.discard(LAYERS[0])
    held = Registry()
    held.holds(body, "v1")
    pushed = (f"{REPO}@{digest_of(body)}",)
    for registry, digests, ref, to in (
        (lacking, pushed, "app", f"{REPO}:v1"),  # a layer to push
        (held, (), "app", f"{REPO}:v1"),  # never pushed from here
        (held, pushed, "nope", f"{REPO}:v1"),  # no such project: gRPC says so
        (held, pushed, "app", "-bad ref"),  # not a reference: gRPC says so
        (None, pushed, "app", f"{REPO}:v1"),  # no registry client: the engine pushes
    ):
        engine = Engine(digests)
        assert sharing_of(engine, registry).push_unchanged(ref, to) is None
        assert engine.pushes == [] and engine.tags == []


def test_an_unchanged_share_under_a_tag_already_in_place_asks_the_engine_once() -> None:
    registry, body = Registry(), manifest()
    registry.holds(body, "v1")
    engine = Engine((f"{REPO}@{digest_of(body)}",), tagged=(f"{REPO}:v1",))
    assert sharing_of(engine, registry).push_unchanged("app", f"{REPO}:v1") is not None
    assert engine.inspected == 1 and engine.tags == [] and engine.pushes == []
