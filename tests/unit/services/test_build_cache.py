"""The team build cache: its setting, its registry client (against a real HTTP server on
127.0.0.1) and what it admits from a registry (with fakes for the engine and the hashing)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from envd.config import Config, dump_config, parse_config
from envd.errors import RegistryError, UsageError
from envd.events import EventBus
from envd.gateways.engine import ImageInfo
from envd.gateways.registry import (
    RECORD_TYPE,
    RegistryClient,
    Repository,
    is_loopback,
    parse_repository,
)
from envd.model import plan as p
from envd.model.content import FACT_METADATA, FACT_RECORD, Entry, Fact, Manifest
from envd.model.fingerprint import EnvironmentSection, Package, section_hash
from envd.progress import Progress
from envd.services.buildcache import BuildCache, Fetched, StepRecord
from envd.services.fingerprints import ENV_LABEL
from envd.services.settings import Settings
from tests.unit.model.test_lockfile import INPUTS, make_lock

# ------------------------------------------------------------------ the setting


def test_cache_takes_a_registry_repository_and_per_project_overrides(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "config.yaml", EventBus())
    settings.set("cache", "127.0.0.1:5000/team/cache")
    settings.set("cache[sk]", "registry.example.com/ml/cache")
    settings.set("cache[quiet]", "off")
    again = Settings(tmp_path / "config.yaml", EventBus()).current
    assert again == settings.current
    assert again.cache_for("other") == "127.0.0.1:5000/team/cache"
    assert again.cache_for("sk") == "registry.example.com/ml/cache"
    assert again.cache_for("quiet") == ""
    assert ("cache[sk]", "registry.example.com/ml/cache") in [e[:2] for e in again.entries()]
    settings.set("cache[sk]", "")  # back to the global cache
    assert settings.current.cache_for("sk") == "127.0.0.1:5000/team/cache"
    settings.set("cache", "")
    assert settings.current.cache_for("other") == ""
    assert parse_config(dump_config(settings.current), "x") == settings.current


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://127.0.0.1:5000/team/cache", "without a scheme"),
        ("team/cache", "a registry host"),
        ("127.0.0.1:5000", "a registry host"),
        ("127.0.0.1:5000/Team/cache", "lowercase"),
        ("127.0.0.1:5000/team/cache:v1", "without a tag or digest"),
        ("127.0.0.1:5000/team/cache@sha256:" + "a" * 64, "without a tag or digest"),
        ("reg.example.com/" + "a" * 200, "REGISTRY/REPO"),
    ],
)
def test_a_bad_cache_reference_is_refused_with_an_example(value: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as caught:
        Config().with_value("cache", value)
    assert "e.g. registry.example.com/team/envd-cache" in (caught.value.hint or "")
    with pytest.raises(UsageError):
        Config().with_value("cache[sk]", value)


# ------------------------------------------------------------------ the registry client


class _Registry(BaseHTTPRequestHandler):
    """Just enough of the distribution API: blobs, manifests, uploads."""

    blobs: dict[str, bytes]
    manifests: dict[str, bytes]
    big: bool

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if "/manifests/" in path:
            body = self.manifests.get(path.rsplit("/", 1)[1])
        else:
            body = self.blobs.get(path.rsplit("/", 1)[1])
        if self.big:
            body = b"x" * (1 << 17)
        if body is None:
            self._send(404)
        else:
            self._send(200, body)

    def do_POST(self) -> None:
        self._send(202, headers={"Location": "/v2/team/cache/blobs/uploads/u1?_state=s"})

    def do_PUT(self) -> None:
        data = self.rfile.read(int(self.headers["Content-Length"]))
        if "/manifests/" in self.path:
            self.manifests[self.path.rsplit("/", 1)[1]] = data
        else:
            digest = self.path.split("digest=")[1].replace("%3A", ":")
            self.blobs[digest] = data
        self._send(201)


@pytest.fixture
def server() -> Iterator[tuple[Repository, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {"blobs": {}, "manifests": {}, "big": False})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield parse_repository(f"127.0.0.1:{httpd.server_port}/team/cache"), handler
    httpd.shutdown()
    httpd.server_close()


def test_records_round_trip_and_a_missing_tag_is_none(
    server: tuple[Repository, type[_Registry]],
) -> None:
    repository, handler = server
    client = RegistryClient(timeout=5)
    assert client.get_record(repository, "rec-abc") is None
    assert not client.has_tag(repository, "rec-abc")
    client.put_record(repository, "rec-abc", b'{"a": 1}\n')
    assert client.has_tag(repository, "rec-abc")
    assert client.get_record(repository, "rec-abc") == b'{"a": 1}\n'
    manifest = json.loads(handler.manifests["rec-abc"])
    assert manifest["config"]["mediaType"] == RECORD_TYPE


def test_a_record_blob_that_is_not_its_digest_is_refused(
    server: tuple[Repository, type[_Registry]],
) -> None:
    repository, handler = server
    client = RegistryClient(timeout=5)
    client.put_record(repository, "rec-abc", b"{}")
    (digest,) = handler.blobs
    handler.blobs[digest] = b'{"evil": 1}'
    with pytest.raises(RegistryError, match="does not match"):
        client.get_record(repository, "rec-abc")


def test_an_image_tag_is_not_a_record(server: tuple[Repository, type[_Registry]]) -> None:
    repository, handler = server
    handler.manifests["rec-x"] = json.dumps(
        {"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "d"}}
    ).encode()
    with pytest.raises(RegistryError, match="not a build cache record"):
        RegistryClient(timeout=5).get_record(repository, "rec-x")


def test_reads_are_bounded(server: tuple[Repository, type[_Registry]]) -> None:
    repository, handler = server
    handler.big = True
    with pytest.raises(RegistryError, match="more than"):
        RegistryClient(timeout=5).get_record(repository, "rec-abc")


def test_an_unreachable_registry_is_a_registry_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(RegistryError, match="cannot reach the build cache") as caught:
        RegistryClient(timeout=2).has_tag(parse_repository(f"127.0.0.1:{port}/t/c"), "x")
    assert "config cache ''" in (caught.value.hint or "")


# ------------------------------------------------------------------ what is admitted

CACHE = "127.0.0.1:5000/team/cache"
NS = "envd-test"
SITE = p.site_packages("3.11.2").lstrip("/")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeEngine:
    def __init__(self) -> None:
        self.images: dict[str, ImageInfo] = {}
        self.tags: dict[str, str] = {}  # reference -> image id
        self.remote: dict[str, ImageInfo] = {}  # what the registry holds, by reference
        self.pushed: list[str] = []

    def add(self, info: ImageInfo, *tags: str) -> None:
        self.images[info.id] = info
        for t in tags:
            self.tags[t] = info.id

    def inspect_image(self, ref: str) -> ImageInfo | None:
        return self.images.get(self.tags.get(ref, ref))

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        info = self.inspect_image(ref)
        return info.layers if info else None

    def image_ids(self) -> set[str]:
        return set(self.images)

    def pull(self, reference: str) -> ImageInfo:
        if reference not in self.remote:
            raise RegistryError(f"no {reference}")
        self.add(self.remote[reference], reference)
        return self.remote[reference]

    def push(self, reference: str) -> None:
        self.remote[reference] = self.images[self.tags[reference]]
        self.pushed.append(reference)

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tags[f"{repository}:{tag}"] = self.images[self.tags.get(image, image)].id

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        if ref in self.tags:
            image = self.tags.pop(ref)
            if image not in self.tags.values():
                self.images.pop(image, None)
            return True
        if ref in self.images:
            self.images.pop(ref)
            self.tags = {t: i for t, i in self.tags.items() if i != ref}
            return True
        return False


class FakeRegistry:
    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise RegistryError(f"cannot reach the build cache {CACHE}: refused")

    def has_tag(self, repository: Repository, tag: str) -> bool:
        self._up()
        return tag in self.records

    def get_record(self, repository: Repository, tag: str) -> bytes | None:
        self._up()
        return self.records.get(tag)

    def put_record(self, repository: Repository, tag: str, record: bytes) -> None:
        self._up()
        self.records[tag] = record

    def manifest_layers(self, repository: Repository, tag: str) -> list[object]:
        return []  # (reading layers alongside the pull is tested against a real registry)


class FakeStore:
    def __init__(self) -> None:
        self.steps: dict[str, str] = {}

    def step_image(self, key: str) -> str | None:
        return self.steps.get(key)

    def record_step(self, key: str, parent: str, name: str, image_id: str, size: int) -> None:
        self.steps[key] = image_id

    def drop_step(self, key: str) -> None:
        self.steps.pop(key, None)


class FakeSteps:
    def __init__(self, engine: FakeEngine, store: FakeStore) -> None:
        self._engine, self._store = engine, store

    def cached(self, key: str) -> str | None:
        image = self._store.step_image(key)
        return image if image is not None and image in self._engine.images else None

    def cached_prefix(self, plan: p.BuildPlan) -> tuple[int, str | None]:
        for index in range(len(plan.steps) - 1, 0, -1):
            if (image := self.cached(plan.steps[index].key)) is not None:
                return index, image
        return 0, None


class FakeContent:
    """The content hash of an image is that of its manifest, as the real hasher's is."""

    def __init__(self) -> None:
        self.manifests: dict[str, Manifest] = {}

    def image_manifest(self, image: str) -> Manifest:
        return self.manifests[image]

    def content_hash(self, image: str) -> str:
        from envd.model.content import content_hash

        return content_hash(self.manifests[image])


class FakeFingerprints:
    def __init__(self, content: FakeContent) -> None:
        self._content = content

    def environment(self, image: str, base_digest: str, env: dict[str, str]) -> EnvironmentSection:
        manifest = self._content.manifests[image]
        packages = tuple(
            Package(f.items[0][0], f.items[0][1])
            for f in manifest.facts.values()
            if f.kind == FACT_METADATA
        )
        from envd.model.content import content_hash

        return EnvironmentSection(
            base_digest, {}, "2.36", "x86_64", (), "3.11.2", "cpython", packages, (), env,
            content_hash(manifest),
        )  # fmt: skip


LOCK = make_lock(
    dataclasses.replace(INPUTS, setup=(), system=()),
    system=(),
    base=dataclasses.replace(make_lock().base, reference="envd-base/bookworm:k1"),
)
PLAN = p.make_plan("sk", LOCK, NS)
TARBALL = LOCK.base.tarball_sha256


def package_files(evil: bool = False) -> Manifest:
    """numpy and pandas installed, each file listed in its RECORD."""
    entries: dict[str, Entry] = {}
    facts: dict[str, Fact] = {}
    for pin in LOCK.python:
        dist = f"/{SITE}/{pin.name}-{pin.version}.dist-info"
        module = f"/{SITE}/{pin.name}/__init__.py"
        entries[module] = Entry("file", 0o644, size=1, sha256=sha(pin.name))
        entries[f"{dist}/METADATA"] = Entry("file", 0o644, size=1, sha256=sha("m"))
        facts[f"{dist}/METADATA"] = Fact(FACT_METADATA, ((pin.name, pin.version),))
        facts[f"{dist}/RECORD"] = Fact(FACT_RECORD, ((module, sha(pin.name)),))
        entries[f"{dist}/RECORD"] = Entry("file", 0o644, size=1, sha256=sha("r"))
    if evil:
        module = f"/{SITE}/numpy/__init__.py"
        entries[module] = Entry("file", 0o644, size=2, sha256=sha("evil"))
    return Manifest(entries, facts)


def _honest_environment() -> str:
    content = FakeContent()
    content.manifests["probe"] = package_files()
    fingerprints = FakeFingerprints(content)
    return section_hash(fingerprints.environment("probe", LOCK.base.digest, dict(LOCK.inputs.env)))


# The lock as a colleague's clone has it after a first build: with the environment hash the
# honest steps make, which is what lets a build take steps from the cache at all.
TRUSTED = dataclasses.replace(LOCK, environment_hash=_honest_environment())


@dataclasses.dataclass
class World:
    engine: FakeEngine
    registry: FakeRegistry
    store: FakeStore
    content: FakeContent
    cache: BuildCache
    lines: list[str]
    config: Config

    def progress(self, item: Progress) -> None:
        self.lines.append(f"[{item.step}] {item.message}")

    def publish(self, index: int, manifest: Manifest, labels: dict[str, str] | None = None) -> str:
        """Put step `index`'s image (all layers up to it) and its record in the registry."""
        step = PLAN.steps[index]
        layers = (TARBALL, *(f"sha256:{sha(s.key)}" for s in PLAN.steps[1 : index + 1]))
        info = ImageInfo(
            id=f"sha256:{sha(step.key + repr(manifest))}", tags=(), labels=labels or {}, size=1,
            repo_digests=(), layers=layers,
        )  # fmt: skip
        self.content.manifests[info.id] = manifest
        self.engine.remote[f"{CACHE}:{step.key}"] = info
        digest = self.content.content_hash(info.id)
        record = StepRecord(step.key, step.name, info.id, layers, digest)
        self.registry.records[f"rec-{step.key}"] = record.to_bytes()
        return info.id

    def fetch(self, lock: Any = TRUSTED) -> Fetched:
        return self.cache.fetch("sk", lock, PLAN, self.progress)


@pytest.fixture
def world() -> World:
    engine, registry, store, content = FakeEngine(), FakeRegistry(), FakeStore(), FakeContent()
    config = Config().with_value("cache", CACHE)
    holder: dict[str, Config] = {"config": config}
    cache = BuildCache(
        engine,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        FakeSteps(engine, store),  # type: ignore[arg-type]
        content,  # type: ignore[arg-type]
        FakeFingerprints(content),  # type: ignore[arg-type]
        registry,  # type: ignore[arg-type]
        lambda: holder["config"],
        EventBus(),
        NS,
    )
    w = World(engine, registry, store, content, cache, [], config)
    w.holder = holder  # type: ignore[attr-defined]
    return w


def final_labels(manifest: Manifest, world: World) -> dict[str, str]:
    section = FakeFingerprints(world.content)
    world.content.manifests["probe"] = manifest
    built = section_hash(section.environment("probe", LOCK.base.digest, dict(LOCK.inputs.env)))
    return {ENV_LABEL: built, "envd.lock-hash": PLAN.lock_hash}


def test_the_longest_sound_prefix_is_pulled_and_tagged(world: World) -> None:
    assert [s.name for s in PLAN.steps] == ["base", "venv", "packages", "metadata"]
    world.publish(2, package_files())
    final = world.publish(3, package_files(), final_labels(package_files(), world))
    fetched = world.fetch()
    assert fetched.keys == (PLAN.final_key,) and fetched.refused == ()
    assert f"[cache] pulled 4 of 4 steps from {CACHE}" in world.lines
    assert world.store.steps == {PLAN.final_key: final}
    assert world.engine.tags == {f"{NS}/cache:{PLAN.final_key[:24]}": final}  # no registry tag


def test_an_image_other_than_its_record_is_refused_removed_and_an_earlier_step_used(
    world: World,
) -> None:
    packages = world.publish(2, package_files())
    world.publish(3, package_files(), final_labels(package_files(), world))
    evil = dataclasses.replace(
        world.engine.remote[f"{CACHE}:{PLAN.final_key}"], id="sha256:" + "e" * 64
    )
    world.engine.remote[f"{CACHE}:{PLAN.final_key}"] = evil
    world.content.manifests[evil.id] = package_files(evil=True)
    fetched = world.fetch()
    assert fetched.keys == (PLAN.steps[2].key,) and fetched.refused == (PLAN.final_key,)
    refused = [line for line in world.lines if line.startswith("[cache] refused")]
    assert len(refused) == 1 and "is not the one its record names" in refused[0]
    assert refused[0].endswith("(building it here)")
    assert "[cache] pulled 3 of 4 steps from " + CACHE in world.lines
    assert evil.id not in world.engine.images  # what was refused is gone
    assert world.store.steps == {PLAN.steps[2].key: packages}


def test_files_other_than_the_record_says_are_refused(world: World) -> None:
    image = world.publish(2, package_files())
    world.content.manifests[image] = package_files(evil=True)  # the bytes, not the record
    assert world.fetch() == Fetched(CACHE, (), (PLAN.steps[2].key,))
    assert any("are not what its pusher recorded" in line for line in world.lines)
    assert world.engine.images == {} and world.store.steps == {}


def test_a_forged_record_still_meets_the_packages_own_records(world: World) -> None:
    world.publish(2, package_files(evil=True))  # record and image agree: both tampered
    assert world.fetch().keys == ()
    assert any("contradict its own packages" in line for line in world.lines)


def test_a_packages_step_must_install_the_locked_pins(world: World) -> None:
    files = package_files()
    files.facts.pop(next(k for k in files.facts if k.endswith("pandas-2.2.2.dist-info/METADATA")))
    world.publish(2, files)
    assert world.fetch().keys == ()
    assert any("does not install envd.lock's pins: pandas" in line for line in world.lines)


def test_the_last_step_must_be_the_locks_environment(world: World) -> None:
    labels = final_labels(package_files(), world)
    world.publish(3, package_files(), labels)
    other = dataclasses.replace(LOCK, environment_hash="sha256:" + "0" * 64)
    assert world.fetch(other).keys == ()
    assert any("envd.lock records sha256:000" in line for line in world.lines)
    world.lines.clear()
    world.publish(3, package_files(), {**labels, ENV_LABEL: "sha256:" + "1" * 64})
    assert world.fetch().keys == ()
    assert any("is not its contents" in line for line in world.lines)
    world.lines.clear()
    world.publish(3, package_files(), labels)
    assert labels[ENV_LABEL] == TRUSTED.environment_hash
    assert world.fetch(TRUSTED).keys == (PLAN.final_key,)


def test_a_base_must_be_the_locked_tarball(world: World) -> None:
    world.publish(0, Manifest({}))
    info = world.engine.remote[f"{CACHE}:{PLAN.steps[0].key}"]
    assert world.fetch().keys == (PLAN.steps[0].key,)
    assert world.engine.tags == {LOCK.base.reference: info.id}  # where the builder finds it
    world.engine.tags.clear()
    world.engine.images.clear()
    world.lines.clear()
    bad = dataclasses.replace(info, layers=("sha256:" + "9" * 64,))
    world.engine.remote[f"{CACHE}:{PLAN.steps[0].key}"] = bad
    world.registry.records[f"rec-{PLAN.steps[0].key}"] = StepRecord(
        PLAN.steps[0].key, "base", bad.id, bad.layers, world.content.content_hash(bad.id)
    ).to_bytes()
    assert world.fetch().keys == ()
    assert any("is not the locked base tarball" in line for line in world.lines)


def test_no_cache_set_asks_nothing_and_a_down_registry_builds_here(world: World) -> None:
    world.registry.down = True
    assert world.fetch() == Fetched(CACHE)
    assert any("cannot reach the build cache" in x and "building here" in x for x in world.lines)
    off = Config().with_value("cache", CACHE).with_value("cache[sk]", "off")
    world.holder["config"] = off  # type: ignore[attr-defined]
    world.lines.clear()
    assert world.fetch() == Fetched() and world.lines == []
    assert world.cache.push("sk", LOCK, PLAN, world.progress) == 0


def test_push_skips_what_is_there_and_writes_the_record_after_the_image(world: World) -> None:
    base = ImageInfo("sha256:" + "b" * 64, (), {}, 1, (), (TARBALL,))
    world.engine.add(base, LOCK.base.reference)
    for index in (1, 2, 3):
        key = PLAN.steps[index].key
        info = ImageInfo(f"sha256:{sha(key)}", (), {}, 1, (), (TARBALL, f"sha256:{sha(key)}"))
        world.engine.add(info, f"{NS}/cache:{key[:24]}")
        world.store.steps[key] = info.id
        world.content.manifests[info.id] = package_files()
    world.content.manifests[base.id] = Manifest({})
    world.registry.records[f"rec-{PLAN.steps[1].key}"] = b"{}"  # venv is there already
    assert world.cache.push("sk", LOCK, PLAN, world.progress) == 3
    assert world.engine.pushed == [f"{CACHE}:{PLAN.steps[i].key}" for i in (0, 2, 3)]
    assert f"[cache] pushed 3 of 4 steps to {CACHE} (1 already there)" in world.lines
    record = StepRecord.from_bytes(world.registry.records[f"rec-{PLAN.final_key}"])
    assert record.image_id == f"sha256:{sha(PLAN.final_key)}" and record.step == "metadata"
    assert not any(t.startswith(CACHE) for t in world.engine.tags)  # registry tags untagged
    # Again: nothing to push; a refused entry is pushed again over the bad one.
    world.engine.pushed.clear()
    assert world.cache.push("sk", LOCK, PLAN, world.progress) == 0
    refused = Fetched(CACHE, (), (PLAN.final_key,))
    assert world.cache.push("sk", LOCK, PLAN, world.progress, refused) == 1
    assert world.engine.pushed == [f"{CACHE}:{PLAN.final_key}"]
    world.registry.down = True
    assert world.cache.push("sk", LOCK, PLAN, world.progress, refused) == 0
    assert "not pushed to" in world.lines[-1]


def test_forgetting_drops_only_this_homes_tag(world: World) -> None:
    packages = world.publish(2, package_files())
    assert world.fetch().keys == (PLAN.steps[2].key,)
    world.engine.tags["envd-other/cache:x"] = packages  # another home holds the same image
    world.cache.forget(Fetched(CACHE, (PLAN.steps[2].key,)))
    assert world.store.steps == {} and world.engine.tags == {"envd-other/cache:x": packages}
    assert packages in world.engine.images


# ------------------------------------------------------------------ nothing to hold it to


def poisoned_chain(world: World) -> Manifest:
    """A packages step and a last step with one extra file (an /etc/profile.d script, which
    neither a RECORD nor a pin speaks of), published with records that agree with them."""
    files = package_files()
    files.entries["/etc/profile.d/evil.sh"] = Entry("file", 0o644, size=1, sha256=sha("evil"))
    world.publish(2, files)
    world.publish(3, files, final_labels(files, world))
    return files


def test_a_lock_with_no_environment_hash_takes_nothing_from_the_cache(world: World) -> None:
    poisoned_chain(world)
    fresh = dataclasses.replace(TRUSTED, environment_hash="")
    assert world.fetch(fresh) == Fetched(CACHE)
    assert world.engine.images == {} and world.engine.tags == {} and world.store.steps == {}
    assert world.lines == [
        f"[cache] not taking steps from {CACHE}: envd.lock records no environment hash yet "
        "to check them against (building here)"
    ]


def test_a_build_that_reads_project_files_takes_nothing_from_the_cache(world: World) -> None:
    poisoned_chain(world)
    inputs = dataclasses.replace(TRUSTED.inputs, setup_files=(("setup.sh",),))
    reads = dataclasses.replace(TRUSTED, inputs=inputs)
    assert world.fetch(reads) == Fetched(CACHE)
    assert world.engine.images == {} and world.store.steps == {}
    assert "this build reads project files" in world.lines[0]


# ------------------------------------------------------------------ loopback, by parsing


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("localhost:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("127.evil.com:5000", False),
        ("127.evil.com", False),
        ("127.0.0.1.nip.io:5000", False),
        ("localhost.evil.com:5000", False),
        ("127.0.0.1:5000@evil.com", False),
        ("127.0.0.1:abc", False),
        ("127.0.0.1:", False),
        ("127.1:5000", False),
        ("[::1", False),
        ("[127.0.0.1]:5000", False),
        ("[::2]:5000", False),
        ("10.0.0.1:5000", False),
        ("registry.example.com", False),
        ("", False),
    ],
)
def test_loopback_is_decided_by_parsing_the_host(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    scheme = "http" if loopback else "https"
    assert Repository(host, "team/cache").base_url.startswith(f"{scheme}://{host}/v2/")


# ------------------------------------------------------------------ the builder and the cache


class _BuildCacheSpy:
    """What the builder asks of the cache; `fetch` admits the packages step."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def fetch(self, project: str, lock: Any, plan: p.BuildPlan, progress: Any) -> Fetched:
        self.calls.append("fetch")
        return Fetched(CACHE, (plan.steps[2].key,))

    def unchecked(self, project: str, lock: Any, plan: p.BuildPlan, progress: Any) -> Fetched:
        self.calls.append("unchecked")
        return Fetched(CACHE)

    def forget(self, fetched: Fetched) -> None:
        self.calls.append(f"forget {len(fetched.keys)}")

    def push(self, project: str, lock: Any, plan: Any, progress: Any, fetched: Any) -> int:
        self.calls.append("push")
        return 0


class _Recorder:
    """Projects, locker, images, steps, sharing and engine in one: any other call does nothing."""

    def __init__(self, lock: Any, fail: BaseException | None = None) -> None:
        self.lock, self.fail, self.recorded = lock, fail, ""

    def ensure_lock(self, row: Any, progress: Any, write: bool = True, snapshot: Any = None) -> Any:
        return self.lock

    def spec(self, row: Any) -> Any:
        return dataclasses.make_dataclass("S", [("gpu", str), ("cuda", Any)])("none", None)

    def built(self, plan: Any) -> None:
        return None

    def by_name(self, name: str) -> None:
        return None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from envd.services.steps import StepsRun

        if self.fail is not None:
            raise self.fail
        return StepsRun("sha256:" + "1" * 64, ())

    def record_environment(self, row: Any, lock: Any, environment_hash: str) -> None:
        self.recorded = environment_hash

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def build_with(cache: _BuildCacheSpy, lock: Any, fail: BaseException | None = None) -> _Recorder:
    from envd.gateways.store import ProjectRow
    from envd.model.state import ProjectState
    from envd.services.builder import Builder

    fakes = _Recorder(lock, fail)
    fingerprint = dataclasses.make_dataclass("F", [("environment_hash", str)])("sha256:here")
    fingerprints = dataclasses.make_dataclass("Fs", [("record", Any)])(lambda *a: fingerprint)
    host = dataclasses.make_dataclass("H", [("host", Any)])(
        dataclasses.make_dataclass("I", [("gpus", tuple)])(())
    )
    builder = Builder(
        fakes,
        fakes,
        fakes,
        fakes,
        fingerprints,
        fakes,
        host,
        fakes,
        EventBus(),
        NS,
        cache,  # type: ignore[arg-type]
    )
    row = ProjectRow("sk", "/nonexistent", 0.0, ProjectState.READY, "", "", "")
    builder.build(row, lambda item: None)
    return fakes


def test_the_cache_is_asked_only_when_the_lock_holds_a_hash_and_a_first_hash_is_local() -> None:
    cache = _BuildCacheSpy()
    fakes = build_with(cache, LOCK)
    assert cache.calls == ["unchecked", "push"]  # built here, then shared; nothing fetched
    assert fakes.recorded == "sha256:here"  # hashed from the image built here
    cache = _BuildCacheSpy()
    fakes = build_with(cache, TRUSTED)
    assert cache.calls == ["fetch", "push"] and fakes.recorded == ""


def test_a_failed_build_forgets_what_it_took_from_the_cache() -> None:
    from envd.errors import ContainerError

    cache = _BuildCacheSpy()
    with pytest.raises(ContainerError, match="a step failed"):
        build_with(cache, TRUSTED, ContainerError("a step failed"))
    # Never compared with the lock: dropped, so no later build starts on it.
    assert cache.calls == ["fetch", "forget 1"]
