"""The team build cache: step images shared through a registry repository, by cache key.

With `envctl config cache REGISTRY/REPO` (or `cache[PROJECT]`), a build first looks its plan's
steps up in the repository, from the last step to the first, and pulls the longest cached
prefix (one image: it holds every layer below it); after a build it pushes the steps it has
that the repository lacks. Each step image REPO:KEY has a record beside it, REPO:rec-KEY,
written by the pusher after the image: the image ID, the layer diff-ids and the content hash
of its files (see envd.gateways.registry). Records are written anonymously: whoever can push to
the repository can replace a step and write a record that agrees with it, so a record is a
claim, never evidence.

A cache step is therefore taken only when the build can be held to something this user
trusts: the environment hash envd.lock records for the final image (`locked_environment`).
With none (a fresh lock, or a project whose build reads project files the lock does not
cover, so the lock cannot say what it makes), nothing is pulled: the steps this engine lacks
are built here, and the hash the builder then writes into envd.lock is hashed here from that
image, never taken from a record. With one, a pulled image is admitted (tagged
NAMESPACE/cache:KEY) only once it is checked: its ID and layers are the record's, its content
hash, computed here from its bytes, is the record's, and the step's own invariants hold (a
base's one layer is the locked tarball; a packages step's files agree with their RECORDs and
install exactly the locked pins; a last step's fingerprint label is its contents and its
environment is the lock's). An intermediate step is then held to the lock through the image
built on it: the builder compares the final environment hash, every file's bytes included,
with the lock's; when they differ it forgets what it took and builds every step here, and a
build that fails before the comparison forgets it too. Anything refused is removed and built
here, and pushed again after the build, over the refused entry. So a cache makes a build
faster but never changes what it builds.

Registry lookups go over HTTP (a manifest GET or HEAD, bounded and with a timeout: the engine
has no "does this tag exist" call but a pull); the images themselves move through the engine,
with its credentials and registry settings.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import tarfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, cast

from envd.config import Config
from envd.errors import EnvdError, RegistryError, VerificationError
from envd.events import EventBus
from envd.gateways.engine import Engine, ImageInfo
from envd.gateways.registry import Blob, Layer, RegistryClient, Repository, parse_repository
from envd.gateways.store import Store
from envd.model import plan as p
from envd.model.content import ContentError, LayerSummary, summarise_layer
from envd.model.fingerprint import section_hash
from envd.model.inventory import integrity_problems
from envd.model.lockfile import LockFile, lock_differences
from envd.model.names import LOCK_HASH_LABEL
from envd.progress import Progress, Reporter
from envd.services.content import ContentHasher
from envd.services.fingerprints import ENV_LABEL, Fingerprints
from envd.services.planning import reads_project_files
from envd.services.steps import CACHE_REPOSITORY, StepRunner

log = logging.getLogger(__name__)

RECORD_SCHEMA = 1
RECORD_PREFIX = "rec-"


def locked_environment(lock: LockFile) -> str:
    """The environment hash a build of `lock` must end in; "" when the lock holds it to none
    (no hash recorded yet, or a build that reads project files the lock does not cover). Only
    with one may a build take steps from the cache: it is what they are checked against."""
    return "" if reads_project_files(lock) else lock.environment_hash


def _why_unchecked(lock: LockFile) -> str:
    if reads_project_files(lock):
        return "this build reads project files, so envd.lock cannot say what it makes"
    return "envd.lock records no environment hash yet to check them against"


@dataclass(frozen=True)
class StepRecord:
    """What the pusher recorded about a step image (REPO:rec-KEY)."""

    key: str
    step: str
    image_id: str
    layers: tuple[str, ...]
    content_hash: str

    def to_bytes(self) -> bytes:
        data = {
            "schema": RECORD_SCHEMA,
            "key": self.key,
            "step": self.step,
            "image_id": self.image_id,
            "layers": list(self.layers),
            "content_hash": self.content_hash,
        }
        return (json.dumps(data, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StepRecord:
        try:
            raw = json.loads(data)
            if raw.get("schema") != RECORD_SCHEMA:
                raise ValueError(f"schema {raw.get('schema')!r}")
            layers = raw["layers"]
            if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
                raise ValueError("layers must be a list of diff-ids")
            return cls(
                str(raw["key"]),
                str(raw["step"]),
                str(raw["image_id"]),
                tuple(layers),
                str(raw["content_hash"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise VerificationError(f"its record is not readable ({exc})") from None


@dataclass(frozen=True)
class Fetched:
    """What a build took from the cache: the keys admitted here (to forget if the build then
    disagrees with the lock, or fails before it could be compared), and the keys refused
    (pushed again after the build)."""

    repository: str = ""
    keys: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


class BuildCache:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        steps: StepRunner,
        content: ContentHasher,
        fingerprints: Fingerprints,
        registry: RegistryClient,
        settings: Callable[[], Config],
        events: EventBus,
        namespace: str = "envd",
    ) -> None:
        self._engine = engine
        self._store = store
        self._steps = steps
        self._content = content
        self._fingerprints = fingerprints
        self._registry = registry
        self._settings = settings
        self._events = events
        self._namespace = namespace

    def repository(self, project: str) -> str:
        """The cache a project's builds use ("" for none)."""
        return self._settings().cache_for(project)

    # ------------------------------------------------------------ in

    def fetch(self, project: str, lock: LockFile, plan: p.BuildPlan, progress: Reporter) -> Fetched:
        """Pull and admit the longest cached prefix of `plan` that this engine lacks."""
        target = self.repository(project)
        if not target:
            return Fetched()
        repository = parse_repository(target)
        have, image = self._steps.cached_prefix(plan)
        if have == len(plan.steps) - 1:
            return Fetched(target)
        if not locked_environment(lock):
            return self.unchecked(project, lock, plan, progress)
        if image is None and not (lock.base.kind == "debian" and self._has_base(lock)):
            have = -1  # not even the base is here
        refused: list[str] = []
        try:
            for index in range(len(plan.steps) - 1, have, -1):
                step = plan.steps[index]
                if step.name == "base" and (lock.base.kind != "debian" or not lock.base.reference):
                    continue  # an image base comes from its own registry
                data = self._registry.get_record(repository, RECORD_PREFIX + step.key)
                if data is None:
                    continue
                try:
                    self._admit(repository, plan, index, data, lock, progress)
                except VerificationError as exc:
                    refused.append(step.key)
                    progress(
                        Progress(
                            "cache",
                            f"refused {target}:{step.key[:12]} ({step.name}): {exc.message} "
                            "(building it here)",
                        )
                    )
                    self._events.publish("cache.refused", project, f"{target}:{step.key}")
                    continue
                progress(
                    Progress(
                        "cache", f"pulled {index + 1} of {len(plan.steps)} steps from {target}"
                    )
                )
                self._events.publish("cache.pulled", project, f"{target}:{step.key}")
                return Fetched(target, (step.key,), tuple(refused))
        except RegistryError as exc:
            progress(Progress("cache", f"{exc.message}; building here"))
            return Fetched(target, (), tuple(refused))
        if not refused:
            progress(Progress("cache", f"no step of this build is in {target} yet"))
        return Fetched(target, (), tuple(refused))

    def unchecked(
        self, project: str, lock: LockFile, plan: p.BuildPlan, progress: Reporter
    ) -> Fetched:
        """Take nothing: the build has nothing to check cache steps against (says why, when
        a cache is set and a step is to be built)."""
        target = self.repository(project)
        if target and self._steps.cached_prefix(plan)[0] != len(plan.steps) - 1:
            why = _why_unchecked(lock)
            progress(Progress("cache", f"not taking steps from {target}: {why} (building here)"))
        return Fetched(target)

    def _has_base(self, lock: LockFile) -> bool:
        layers = self._engine.image_layers(lock.base.reference) if lock.base.reference else None
        return layers == (lock.base.tarball_sha256,)

    def _admit(
        self,
        repository: Repository,
        plan: p.BuildPlan,
        index: int,
        data: bytes,
        lock: LockFile,
        progress: Reporter,
    ) -> str:
        step = plan.steps[index]
        record = StepRecord.from_bytes(data)
        if record.key != step.key or record.step != step.name:
            raise VerificationError(
                f"its record is for another step ({record.step} {record.key[:12]})"
            )
        reference = f"{repository}:{step.key}"
        known = self._engine.image_ids()
        progress(Progress("cache", f"pulling {step.name} from {repository}"))
        # While the engine pulls, the same layers are read here from the registry and
        # summarised (each checked against its diff-id): hashing the image costs no second read.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-read") as pool:
            reading = pool.submit(self._summarise_layers, repository, step.key, record)
            try:
                info = self._engine.pull(reference)
            finally:
                try:
                    reading.result()
                except (EnvdError, ContentError, OSError, ValueError, EOFError) as exc:
                    log.info("reading %s's layers alongside the pull: %s", reference, exc)
        new = info.id not in known
        try:
            self._check(info, record, plan, index, lock, progress)
        except (VerificationError, ContentError) as exc:
            self._engine.remove_image(reference)  # the registry's tag, never a local one
            if new:
                self._engine.remove_image(info.id, force=True)
            message = exc.message if isinstance(exc, VerificationError) else str(exc)
            raise VerificationError(message) from None
        if step.name == "base":
            repo, tag = lock.base.reference.rsplit(":", 1)
            self._engine.tag(info.id, repo, tag)
        else:
            self._engine.tag(info.id, f"{self._namespace}/{CACHE_REPOSITORY}", step.key[:24])
            parent = plan.steps[index - 1].key
            self._store.record_step(step.key, parent, step.name, info.id, 0)
        self._engine.remove_image(reference)  # untag: the local tag holds it now
        return info.id

    def _summarise_layers(self, repository: Repository, tag: str, record: StepRecord) -> None:
        """Summaries of the layers this engine's cache lacks, from the registry's bytes; one
        whose bytes are not its diff-id is not kept (the engine's copy is read instead)."""
        layers = self._registry.manifest_layers(repository, tag)
        if len(layers) != len(record.layers):
            return
        wanted = [
            (layer, diff_id)
            for layer, diff_id in zip(layers, record.layers, strict=True)
            if not self._content.has_summary(diff_id)
        ]

        def summarise(layer: Layer, diff_id: str) -> None:
            with self._registry.open_blob(repository, layer) as blob:
                summary, digest = _summarise_blob(blob, layer)
            if digest == diff_id:
                self._content.add_summary(diff_id, summary)

        if wanted:  # (decompressing and hashing leave the interpreter lock to other layers)
            with ThreadPoolExecutor(min(len(wanted), 3), thread_name_prefix="layer") as pool:
                for done in [pool.submit(summarise, *item) for item in wanted]:
                    done.result()

    def _check(
        self,
        info: ImageInfo,
        record: StepRecord,
        plan: p.BuildPlan,
        index: int,
        lock: LockFile,
        progress: Reporter,
    ) -> None:
        """VerificationError unless the pulled image is what its record and the lock say."""
        step = plan.steps[index]
        if not locked_environment(lock):  # (fetch asks nothing then; this holds it here too)
            raise VerificationError(_why_unchecked(lock))
        if info.id != record.image_id or info.layers != record.layers:
            raise VerificationError(
                f"the image is not the one its record names (image {info.id[:19]}, record "
                f"{record.image_id[:19]})"
            )
        if step.name == "base" and info.layers != (lock.base.tarball_sha256,):
            raise VerificationError(
                f"its layer is not the locked base tarball {lock.base.tarball_sha256[:19]}"
            )
        progress(Progress("verify", "hashing every file of the pulled image, from its layers"))
        actual = self._content.content_hash(info.id)
        if actual != record.content_hash:
            raise VerificationError(
                f"its files (content {actual[:19]}) are not what its pusher recorded "
                f"({record.content_hash[:19]})"
            )
        if step.name == "base":
            return
        manifest = self._content.image_manifest(info.id)
        problems = integrity_problems(manifest)
        if problems:
            named = "; ".join(f"{x.path} {x.what}" for x in problems[:5])
            raise VerificationError(f"its files contradict its own packages: {named}")
        names = [s.name for s in plan.steps]
        python_from = names.index("packages") if "packages" in names else len(names) - 1
        if index < python_from:
            return
        section = self._fingerprints.environment(info.id, lock.base.digest, dict(lock.inputs.env))
        differences = lock_differences(lock, section)
        if differences:
            raise VerificationError(f"it does not install envd.lock's pins: {differences[0]}")
        if index != len(plan.steps) - 1:
            return
        built = section_hash(section)
        if info.labels.get(ENV_LABEL) != built:
            raise VerificationError(
                f"its fingerprint label ({info.labels.get(ENV_LABEL, 'none')}) is not its "
                f"contents ({built})"
            )
        if info.labels.get(LOCK_HASH_LABEL) != plan.lock_hash:
            raise VerificationError("it was built from another lock")
        expected = locked_environment(lock)
        if built != expected:  # ("" too: nothing to hold it to, never admitted)
            raise VerificationError(
                f"its environment is {built}, envd.lock records {expected or 'none'}"
            )

    def forget(self, fetched: Fetched) -> None:
        """Drop what a build admitted from the cache (its result disagreed with the lock)."""
        for key in fetched.keys:
            self._store.drop_step(key)
            # Only this home's tag: on a shared engine another home may hold the same image.
            self._engine.remove_image(f"{self._namespace}/{CACHE_REPOSITORY}:{key[:24]}")

    # ------------------------------------------------------------ out

    def push(
        self,
        project: str,
        lock: LockFile,
        plan: p.BuildPlan,
        progress: Reporter,
        fetched: Fetched | None = None,
    ) -> int:
        """Push the plan's step images the cache lacks (or held refused); the count pushed.
        A failure is reported, never raised: the build itself has succeeded."""
        target = self.repository(project)
        if not target:
            return 0
        repository = parse_repository(target)
        refused = set(fetched.refused) if fetched else set()
        pushed = present = 0
        try:
            for step in plan.steps:
                image = self._step_image(step, lock)
                if image is None:
                    continue
                tag = RECORD_PREFIX + step.key
                if step.key not in refused and self._registry.has_tag(repository, tag):
                    present += 1
                    continue
                self._push_step(repository, step, image, progress)
                pushed += 1
        except EnvdError as exc:
            log.warning("pushing %s's steps to %s: %s", project, target, exc.message)
            progress(Progress("cache", f"not pushed to {target}: {exc.message}"))
            return pushed
        progress(
            Progress(
                "cache",
                f"pushed {pushed} of {len(plan.steps)} steps to {target}"
                + (f" ({present} already there)" if present else ""),
            )
        )
        if pushed:
            self._events.publish("cache.pushed", project, target, steps=str(pushed))
        return pushed

    def _step_image(self, step: p.Step, lock: LockFile) -> ImageInfo | None:
        if step.name == "base":
            if lock.base.kind != "debian" or not self._has_base(lock):
                return None
            return self._engine.inspect_image(lock.base.reference)
        image = self._steps.cached(step.key)
        return self._engine.inspect_image(image) if image is not None else None

    def _push_step(
        self, repository: Repository, step: p.Step, info: ImageInfo, progress: Reporter
    ) -> None:
        """The image first, then its record: a record names only a complete image."""
        record = StepRecord(
            step.key, step.name, info.id, info.layers, self._content.content_hash(info.id)
        )
        reference = f"{repository}:{step.key}"
        self._engine.tag(info.id, str(repository), step.key)
        try:
            progress(Progress("cache", f"pushing {step.name} to {repository}"))
            self._engine.push(reference)
        finally:
            self._engine.remove_image(reference)  # the local tags keep the image
        self._registry.put_record(repository, RECORD_PREFIX + step.key, record.to_bytes())


class _Sha256Reader:
    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    def digest(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self._hash.hexdigest()


def _summarise_blob(blob: Blob, layer: Layer) -> tuple[LayerSummary, str]:
    """A layer's summary and the sha256 of its uncompressed tar (its diff-id)."""
    source = cast(IO[bytes], blob)
    opened = gzip.GzipFile(fileobj=source, mode="rb") if layer.gzip else None
    try:
        inner = _Sha256Reader(cast(IO[bytes], opened) if opened is not None else source)
        try:
            summary = summarise_layer(cast(IO[bytes], inner))
        except tarfile.TarError as exc:
            raise ContentError(f"unreadable layer {layer.digest}: {exc}") from None
        return summary, inner.digest()
    except zlib.error as exc:
        raise ContentError(f"corrupt layer {layer.digest}: {exc}") from None
    finally:
        if opened is not None:
            opened.close()
