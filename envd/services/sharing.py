"""Sharing built environments: push to a registry or write an archive; pull or load and verify.

An image carries its lock hash and environment hash as labels. Whatever comes in is probed
again and refused (and removed) when what is inside does not match its labels, so a tampered
or corrupt image is never registered.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from envd.errors import EnvdError, NotFound, RegistryError, UsageError, VerificationError
from envd.events import EventBus
from envd.gateways.engine import Engine, ImageInfo, split_reference
from envd.gateways.files import sha256_file, write_atomic
from envd.gateways.registry import OCI_MANIFEST, RegistryClient, Repository, parse_repository
from envd.gateways.store import ProjectRow
from envd.model import names
from envd.model.fingerprint import EnvironmentSection, dumps, section_hash
from envd.model.inventory import integrity_problems
from envd.model.lockfile import dumps as dump_lock
from envd.model.lockfile import lock_differences
from envd.progress import Progress, Reporter
from envd.services.archives import (
    ARCHIVE_FINGERPRINT,
    ARCHIVE_IMAGE,
    ARCHIVE_META,
    read_archive,
    rebuilt_image_tar,
)
from envd.services.fingerprints import ENV_LABEL, Fingerprints
from envd.services.images import Images
from envd.services.planning import plan_for
from envd.services.projects import Projects


@dataclass(frozen=True)
class Shared:
    reference: str
    digest: str
    pushed: int
    skipped: int
    pinned: bool


@dataclass(frozen=True)
class Received:
    image: str
    image_id: str
    project: str
    environment_hash: str


log = logging.getLogger(__name__)


class Sharing:
    def __init__(
        self,
        engine: Engine,
        projects: Projects,
        images: Images,
        fingerprints: Fingerprints,
        events: EventBus,
        namespace: str = "envd",
        scratch: Path | None = None,
        registry: RegistryClient | None = None,
    ) -> None:
        self._namespace = namespace
        self._registry = registry  # asked first whether a push would move anything
        self._scratch = scratch  # private folder for whole image tarballs (None: the system's)
        self._engine = engine
        self._projects = projects
        self._images = images
        self._fingerprints = fingerprints
        self._events = events

    def _scratch_dir(self, prefix: str) -> tempfile.TemporaryDirectory[str]:
        if self._scratch is not None:
            self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=prefix, dir=self._scratch)

    def _current(self, row: ProjectRow) -> str:
        image = self._images.current_image(row)
        if image is None:
            raise NotFound(
                f"{row.name} has no image for its current lock",
                hint=f"build it first: `envctl build {row.name}`",
            )
        return image

    # ------------------------------------------------------------ out

    def push(self, row: ProjectRow, to: str, pin: bool, progress: Reporter) -> Shared:
        image, repository, tag = self._tagged(row, to)
        there = self._already_there(image, repository, tag)
        if there is not None:
            digest, pushed, skipped = there[0], 0, there[1]
            progress(Progress("push", _nothing_to_push(repository, tag, image)))
        else:
            progress(Progress("push", f"pushing {image} to {repository}:{tag}"))
            result = self._engine.push(
                f"{repository}:{tag}", lambda line: progress(Progress("push", line, log=True))
            )
            digest, pushed, skipped = result.digest, result.pushed, result.skipped
        return self._shared(row, f"{repository}@{digest}", digest, pushed, skipped, pin)

    def push_unchanged(self, ref: str, to: str) -> tuple[Shared, str] | None:
        """`envctl share image REF --to TO` when the registry holds the image already (the
        enter socket's "share-check"): the share recorded as `push` records it, and the
        progress line it said. None when a push would move something, or the share has
        something to say (an error, an image removed behind envd's back): share over gRPC,
        which pushes or says why not. One engine call when the tag is in place already."""
        try:
            check_reference(to)
            row = self._projects.resolve(ref)
            image = self._images.current_image(row, check_engine=False)
            info = self._engine.inspect_image(image) if image is not None else None
            if image is None or info is None:
                return None
            repository, tag = _target(to, image)
            there = self._already_there(image, repository, tag, info)
            if there is None:
                return None
            if f"{repository}:{tag}" not in info.tags:
                self._engine.tag(image, repository, tag)
        except EnvdError:
            return None
        digest, skipped = there
        shared = self._shared(row, f"{repository}@{digest}", digest, 0, skipped, pin=False)
        return shared, _nothing_to_push(repository, tag, image)

    def _tagged(self, row: ProjectRow, to: str) -> tuple[str, str, str]:
        """(image, repository, tag): the project's current image, tagged REGISTRY/REPO[:TAG]
        here (without a tag, the image's own)."""
        image = self._current(row)
        repository, tag = _target(to, image)
        self._engine.tag(image, repository, tag)
        return image, repository, tag

    def _shared(
        self, row: ProjectRow, reference: str, digest: str, pushed: int, skipped: int, pin: bool
    ) -> Shared:
        if pin:
            self._pin(row, reference)
        self._events.publish("image.shared", row.name, reference, pushed=str(pushed))
        return Shared(reference, digest, pushed, skipped, pin)

    def _already_there(
        self, image: str, repository: str, tag: str, info: ImageInfo | None = None
    ) -> tuple[str, int] | None:
        """(manifest digest, layers) when the registry holds this very image, with every blob
        its manifest names, as REPOSITORY:TAG (the tag moved onto it when it pointed
        elsewhere): then a push would move nothing. None when it does not, or cannot say
        (e.g. it needs a login, which only the engine has): then the engine pushes."""
        if self._registry is None or not _registry_host(repository):
            return None
        info = info or self._engine.inspect_image(image)
        digests = (
            [d.partition("@")[2] for d in info.repo_digests if d.partition("@")[0] == repository]
            if info is not None
            else []
        )
        if info is None or not digests:
            return None  # never pushed there (as far as the engine knows)
        where = parse_repository(repository)
        try:
            found = self._registry.get_manifest(where, tag)
            if found is not None and found[1] in digests:  # the tag is this image already
                blobs = _blobs_of(found[0], info)
                return (
                    (found[1], len(blobs) - 1) if blobs and self._has_blobs(where, blobs) else None
                )
            for digest in digests:  # the image is there by digest: point the tag at it
                found = self._registry.get_manifest(where, digest)
                blobs = _blobs_of(found[0], info) if found is not None else None
                if found is not None and blobs and self._has_blobs(where, blobs):
                    media = json.loads(found[0]).get("mediaType") or OCI_MANIFEST
                    self._registry.put_manifest(where, tag, found[0], str(media))
                    return digest, len(blobs) - 1
        except (RegistryError, ValueError) as exc:
            log.debug("asking %s before pushing: %s; the engine pushes", repository, exc)
        return None

    def _has_blobs(self, where: Repository, blobs: list[str]) -> bool:
        registry = self._registry
        assert registry is not None
        with ThreadPoolExecutor(max_workers=min(8, len(blobs) or 1)) as pool:
            return all(pool.map(lambda blob: registry.has_blob(where, blob), blobs))

    def _pin(self, row: ProjectRow, reference: str) -> None:
        state = self._projects.lock_state(row)
        if state.lock is None:
            raise NotFound(f"{state.path} does not exist", hint=f"run `envctl lock {row.name}`")
        lock, shared = state.lock, self._fingerprints.for_image(reference).environment_hash
        if lock.environment_hash and lock.environment_hash != shared:
            raise VerificationError(
                f"{reference} is not the environment envd.lock records ({shared}, the lock "
                f"records {lock.environment_hash}); not pinned",
                hint=f"rebuild with `envctl build {row.name}` and share again",
            )
        pinned = replace(lock, shared_image=reference, environment_hash=shared)
        write_atomic(state.path, dump_lock(pinned))

    def save(self, row: ProjectRow, output: Path, progress: Reporter) -> Shared:
        image = self._current(row)
        info = self._engine.inspect_image(image)
        assert info is not None
        fp = self._fingerprints.for_image(image)
        progress(Progress("save", f"writing {image} to {output}"))
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        with self._scratch_dir("save-") as tmp:
            raw = Path(tmp) / ARCHIVE_IMAGE
            self._engine.save(image, raw)
            meta = {
                "image": image,
                "image_id": info.id,
                "project": row.name,
                "environment_hash": fp.environment_hash,
                "image_sha256": sha256_file(raw),
            }
            try:
                with tarfile.open(partial, "w:gz", compresslevel=3) as archive:
                    _add_text(archive, ARCHIVE_META, json.dumps(meta, indent=2, sort_keys=True))
                    _add_text(archive, ARCHIVE_FINGERPRINT, dumps(fp))
                    archive.add(raw, ARCHIVE_IMAGE)
                partial.replace(output)
            finally:
                partial.unlink(missing_ok=True)
        return Shared(str(output), info.id, 0, 0, False)

    # ------------------------------------------------------------ in

    def pull(self, reference: str, progress: Reporter) -> Received:
        known = self._engine.image_ids()
        moved = self._tag_target(reference)
        progress(Progress("pull", f"pulling {reference}"))
        info = self._engine.pull(reference)
        return self._admit(info, reference, progress, info.id not in known, moved)

    def _tag_target(self, reference: str) -> tuple[str, str] | None:
        """(tag, image it points at now) when pulling `reference` may move a local tag."""
        if "@" in reference:
            return None  # a digest reference names content; the engine tags nothing
        current = self._engine.inspect_image(reference)
        return (reference, current.id) if current is not None else None

    def load(self, path: Path, progress: Reporter) -> Received:
        if not path.is_file():
            raise NotFound(f"no archive at {path}")
        progress(Progress("load", f"reading {path}"))
        with self._scratch_dir("load-") as tmp:
            # Parsed once, bounded; the engine gets an image tar envd writes from the parsed
            # manifest (config and layers, no tags): the archive's names and tags are never
            # acted on, and the id is the sha256 of the config it carries.
            try:
                with open(path, "rb") as source:
                    parsed = read_archive(source, Path(tmp), str(path))
            except OSError as exc:
                raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
            meta, known = parsed.meta, self._engine.image_ids()
            loaded = self._engine.load(rebuilt_image_tar(parsed))
        # The ID is the config's digest on the classic store, a manifest's on containerd's.
        image_id = self._engine.loaded_image(parsed.image_id, loaded)
        new = image_id not in known
        info = self._engine.inspect_image(image_id)
        if info is None:
            raise RegistryError(f"{path}: the engine did not load the image {image_id}")
        claimed = meta.get("environment_hash")
        if claimed != info.labels.get(ENV_LABEL):
            self._refuse(
                info,
                f"{path}: the archive's record ({claimed}) and the image's label "
                f"({info.labels.get(ENV_LABEL, 'none')}) disagree",
                new,
                None,
            )
        return self._admit(info, str(path), progress, new, None)

    def _admit(
        self,
        info: ImageInfo,
        source: str,
        progress: Reporter,
        new: bool,
        moved: tuple[str, str] | None,
    ) -> Received:
        """Recompute the environment from the image's bytes; register it only if it matches
        its label and, where a project's lock names it, that lock."""
        claimed = info.labels.get(ENV_LABEL, "")
        if not claimed:
            self._refuse(info, f"{source} was not made by envd (no {ENV_LABEL} label)", new, moved)
        progress(Progress("verify", "hashing every file of the image, from its layers"))
        manifest = self._fingerprints.manifest(info.id)
        section = self._fingerprints.image_environment(info)
        problems = integrity_problems(manifest)
        actual = section_hash(section)
        if actual != claimed or problems:
            named = "; ".join(f"{p.path} {p.what}" for p in problems[:10])
            more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
            why = (
                f"its files do not match its fingerprint label (label {claimed}, contents {actual})"
                if actual != claimed
                else "its label matches, but its files contradict its own packages"
            )
            self._refuse(
                info, f"{source}: {why}" + (f": {named}{more}" if named else ""), new, moved
            )
        project, disagreement = self._register(info, section)
        if disagreement:
            self._refuse(info, f"{source}: {disagreement}", new, moved)
        self._fingerprints.record_section(info.id, section)
        self._events.publish("image.received", project, source)
        return Received(info.tags[0] if info.tags else info.id, info.id, project, claimed)

    def _refuse(
        self, info: ImageInfo, message: str, new: bool, moved: tuple[str, str] | None
    ) -> NoReturn:
        """Leave the engine as it was: a new image goes, a moved tag goes back."""
        if moved is not None and moved[1] != info.id:
            repository, tag = split_reference(moved[0])
            self._engine.tag(moved[1], repository, tag)
        if new:
            self._engine.remove_image(info.id, force=True)
        raise VerificationError(
            message,
            hint=("the image was removed; " if new else "nothing was changed; ")
            + "ask for a fresh share, or build from envd.lock",
        )

    def _register(self, info: ImageInfo, section: EnvironmentSection) -> tuple[str, str]:
        """(project, "") after tagging the image for the registered project whose current lock
        it was built from; ("", why) when that lock pins something else; ("", "") for none."""
        lock_hash = info.labels.get(names.LOCK_HASH_LABEL, "")
        for row in self._projects.list():
            try:
                lock = self._projects.lock_state(row).lock
            except EnvdError:  # an unreadable spec or lock: that project cannot claim the image
                continue
            if lock is None:
                continue
            try:
                plan = plan_for(row, lock, self._namespace)
            except EnvdError:
                continue
            if plan.lock_hash != lock_hash:
                continue
            differences = lock_differences(lock, section)
            if lock.environment_hash and lock.environment_hash != section_hash(section):
                differences.append(
                    f"its environment is {section_hash(section)}, envd.lock records "
                    f"{lock.environment_hash}"
                )
            if differences:
                return "", (
                    f"it claims to be {row.name}'s environment, but {'; '.join(differences)}"
                )
            repository, tag = plan.tag.split(":")
            self._engine.tag(info.id, repository, tag)
            self._images.record(row, plan, info.id)
            self._projects.set_image(row.name, plan.tag, lock_hash)
            return row.name, ""
        return "", ""


def _add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mode = 0o644
    archive.addfile(member, io.BytesIO(data))


def _registry_host(repository: str) -> bool:
    """Whether REPOSITORY names its registry (`host:port/…`, `host.domain/…`, `localhost/…`),
    as the engine decides; Docker Hub's short names need a login dance envd leaves to it."""
    first, slash, _ = repository.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def _blobs_of(manifest: bytes, info: ImageInfo) -> list[str] | None:
    """The config and layer digests an image manifest names, when it is the manifest of
    `info` (its config is the image's, or it is the image itself on the containerd store);
    None otherwise (another image, or an index)."""
    body = json.loads(manifest)
    config = body.get("config") if isinstance(body, dict) else None
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(config, dict) or not isinstance(layers, list):
        return None
    own = "sha256:" + hashlib.sha256(manifest).hexdigest()
    if info.id not in (config.get("digest"), own):
        return None
    digests = [config.get("digest"), *(layer.get("digest") for layer in layers)]
    if not all(isinstance(d, str) and d.startswith("sha256:") for d in digests):
        return None
    return [str(d) for d in digests]


def _target(to: str, image: str) -> tuple[str, str]:
    """(repository, tag) of REGISTRY/REPO[:TAG]; without a tag, the image's own."""
    repository, tag = split_reference(to)
    if tag == "latest" and not to.endswith(":latest"):
        tag = image.split(":")[-1]
    return repository, tag


def _nothing_to_push(repository: str, tag: str, image: str) -> str:
    return f"{repository}:{tag} is {image} already: nothing to push"


def check_reference(to: str) -> None:
    if not to or " " in to or to.startswith("-"):
        raise UsageError(f"{to!r} is not an image reference", hint="e.g. localhost:5000/team/p")
