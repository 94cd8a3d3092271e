"""Sharing built environments: push to a registry or write an archive; pull or load and verify.

An image carries its lock hash and environment hash as labels. Whatever comes in is probed
again and refused (and removed) when what is inside does not match its labels, so a tampered
or corrupt image is never registered.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from envd.errors import EnvdError, NotFound, RegistryError, UsageError, VerificationError
from envd.events import EventBus
from envd.gateways.engine import Engine, ImageInfo, split_reference
from envd.gateways.files import sha256_file, write_atomic
from envd.gateways.store import ProjectRow
from envd.model.fingerprint import dumps, section_hash
from envd.model.lockfile import dumps as dump_lock
from envd.model.plan import make_plan
from envd.progress import Progress, Reporter
from envd.services.fingerprints import ENV_LABEL, Fingerprints, spec_env_names
from envd.services.images import Images
from envd.services.projects import Projects

ARCHIVE_IMAGE = "image.tar"
ARCHIVE_FINGERPRINT = "fingerprint.json"
ARCHIVE_META = "envd-share.json"


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


class Sharing:
    def __init__(
        self,
        engine: Engine,
        projects: Projects,
        images: Images,
        fingerprints: Fingerprints,
        events: EventBus,
    ) -> None:
        self._engine = engine
        self._projects = projects
        self._images = images
        self._fingerprints = fingerprints
        self._events = events

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
        image = self._current(row)
        repository, tag = split_reference(to)
        if tag == "latest" and not to.endswith(":latest"):
            tag = image.split(":")[-1]
        self._engine.tag(image, repository, tag)
        progress(Progress("push", f"pushing {image} to {repository}:{tag}"))
        result = self._engine.push(
            f"{repository}:{tag}", lambda line: progress(Progress("push", line, log=True))
        )
        reference = f"{repository}@{result.digest}"
        if pin:
            self._pin(row, reference)
        self._events.publish("image.shared", row.name, reference, pushed=str(result.pushed))
        return Shared(reference, result.digest, result.pushed, result.skipped, pin)

    def _pin(self, row: ProjectRow, reference: str) -> None:
        state = self._projects.lock_state(row)
        if state.lock is None:
            raise NotFound(f"{state.path} does not exist", hint=f"run `envctl lock {row.name}`")
        write_atomic(state.path, dump_lock(replace(state.lock, shared_image=reference)))

    def save(self, row: ProjectRow, output: Path, progress: Reporter) -> Shared:
        image = self._current(row)
        info = self._engine.inspect_image(image)
        assert info is not None
        fp = self._fingerprints.for_image(image)
        progress(Progress("save", f"writing {image} to {output}"))
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        with tempfile.TemporaryDirectory(prefix="envd-save-") as tmp:
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
        progress(Progress("pull", f"pulling {reference}"))
        info = self._engine.pull(reference)
        return self._admit(info, reference, progress)

    def load(self, path: Path, progress: Reporter) -> Received:
        if not path.is_file():
            raise NotFound(f"no archive at {path}")
        progress(Progress("load", f"reading {path}"))
        with tempfile.TemporaryDirectory(prefix="envd-load-") as tmp:
            try:
                _check_gzip(path)  # tarfile stops at the tar end marker, before gzip's CRC
                with tarfile.open(path, "r:gz") as archive:
                    names = set(archive.getnames())
                    if not {ARCHIVE_IMAGE, ARCHIVE_META} <= names:
                        raise RegistryError(f"{path} is not an envd archive (missing members)")
                    archive.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise RegistryError(
                    f"{path} is corrupt or truncated ({exc})",
                    hint="copy it again, or pull the image from a registry",
                ) from None
            meta = json.loads((Path(tmp) / ARCHIVE_META).read_text())
            if sha256_file(Path(tmp) / ARCHIVE_IMAGE) != meta.get("image_sha256"):
                raise RegistryError(
                    f"{path} is corrupt: the image inside does not match its recorded sha256",
                    hint="copy it again, or pull the image from a registry",
                )
            loaded = self._engine.load(Path(tmp) / ARCHIVE_IMAGE)
        info = self._engine.inspect_image(str(meta["image_id"]))
        if info is None:
            raise RegistryError(f"{path}: the engine loaded {loaded}, not the image it names")
        if info.labels.get(ENV_LABEL) != meta.get("environment_hash"):
            self._refuse(info, f"{path}: the archive's record and the image's labels disagree")
        return self._admit(info, str(path), progress)

    def _admit(self, info: ImageInfo, source: str, progress: Reporter) -> Received:
        """Recompute the environment from what is inside; register it only if it matches."""
        claimed = info.labels.get(ENV_LABEL, "")
        if not claimed:
            self._refuse(info, f"{source} was not made by envd (no {ENV_LABEL} label)")
        progress(Progress("verify", "recomputing the environment fingerprint from the image"))
        base = info.labels.get("envd.base-digest", "")
        section = self._fingerprints.probe_image(info.id, base, spec_env_names(info.env))
        actual = section_hash(section)
        if actual != claimed:
            self._refuse(
                info,
                f"{source} does not match its fingerprint label (label {claimed}, "
                f"contents {actual})",
            )
        project = self._register(info)
        self._fingerprints.record_section(info.id, section)
        self._events.publish("image.received", project, source)
        return Received(info.tags[0] if info.tags else info.id, info.id, project, claimed)

    def _refuse(self, info: ImageInfo, message: str) -> None:
        self._engine.remove_image(info.id, force=True)
        raise VerificationError(message, hint="the image was removed; ask for a fresh share")

    def _register(self, info: ImageInfo) -> str:
        """Tag the image for every registered project whose current lock it was built from."""
        lock_hash = info.labels.get("envd.lock-hash", "")
        for row in self._projects.list():
            try:
                lock = self._projects.lock_state(row).lock
            except EnvdError:  # an unreadable spec or lock: that project cannot claim the image
                continue
            if lock is None:
                continue
            plan = make_plan(row.name, lock)
            if plan.lock_hash == lock_hash:
                repository, tag = plan.tag.split(":")
                self._engine.tag(info.id, repository, tag)
                self._images.record(row, plan, info.id)
                self._projects.set_image(row.name, plan.tag, lock_hash)
                return row.name
        return ""


def _check_gzip(path: Path) -> None:
    """Read the whole gzip stream, so a flipped or missing byte fails its CRC or length."""
    with gzip.open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def _add_text(archive: tarfile.TarFile, name: str, text: str) -> None:
    import io

    data = text.encode()
    member = tarfile.TarInfo(name)
    member.size = len(data)
    member.mode = 0o644
    archive.addfile(member, io.BytesIO(data))


def check_reference(to: str) -> None:
    if not to or " " in to or to.startswith("-"):
        raise UsageError(f"{to!r} is not an image reference", hint="e.g. localhost:5000/team/p")
