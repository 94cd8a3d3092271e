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
from typing import TYPE_CHECKING

from envd.errors import NotFound, RegistryError, UsageError, VerificationError
from envd.gateways.engine import ImageInfo, split_reference
from envd.gateways.files import sha256_file, write_atomic
from envd.gateways.projectfiles import read_lock
from envd.gateways.store import ProjectRow
from envd.model.fingerprint import dumps, section_hash
from envd.model.lockfile import dumps as dump_lock
from envd.model.plan import make_plan
from envd.progress import Progress, Reporter
from envd.services.fingerprints import ENV_LABEL, spec_env_names
from envd.services.locker import lock_path

if TYPE_CHECKING:
    from envd.daemon.wiring import App

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
    def __init__(self, app: App) -> None:
        self.app = app

    def _current(self, row: ProjectRow) -> str:
        image = self.app.builder.current_image(row)
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
        self.app.engine.tag(image, repository, tag)
        progress(Progress("push", f"pushing {image} to {repository}:{tag}"))
        result = self.app.engine.push(
            f"{repository}:{tag}", lambda line: progress(Progress("push", line, log=True))
        )
        reference = f"{repository}@{result.digest}"
        if pin:
            self._pin(row, reference)
        self.app.events.publish("image.shared", row.name, reference, pushed=str(result.pushed))
        return Shared(reference, result.digest, result.pushed, result.skipped, pin)

    def _pin(self, row: ProjectRow, reference: str) -> None:
        path = lock_path(row)
        lock = read_lock(path)
        if lock is None:
            raise NotFound(f"{path} does not exist", hint=f"run `envctl lock {row.name}`")
        write_atomic(path, dump_lock(replace(lock, shared_image=reference)))

    def save(self, row: ProjectRow, output: Path, progress: Reporter) -> Shared:
        image = self._current(row)
        info = self.app.engine.inspect_image(image)
        assert info is not None
        fp = self.app.fingerprints.for_image(image)
        progress(Progress("save", f"writing {image} to {output}"))
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        with tempfile.TemporaryDirectory(prefix="envd-save-") as tmp:
            raw = Path(tmp) / ARCHIVE_IMAGE
            self.app.engine.save(image, raw)
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
        info = self.app.engine.pull(reference)
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
            loaded = self.app.engine.load(Path(tmp) / ARCHIVE_IMAGE)
        info = self.app.engine.inspect_image(str(meta["image_id"]))
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
        section = self.app.fingerprints.probe_image(info.id, base, spec_env_names(info.env))
        actual = section_hash(section)
        if actual != claimed:
            self._refuse(
                info,
                f"{source} does not match its fingerprint label (label {claimed}, "
                f"contents {actual})",
            )
        project = self._register(info)
        self.app.fingerprints.record_section(info.id, section)
        self.app.events.publish("image.received", project, source)
        return Received(info.tags[0] if info.tags else info.id, info.id, project, claimed)

    def _refuse(self, info: ImageInfo, message: str) -> None:
        self.app.engine.remove_image(info.id, force=True)
        raise VerificationError(message, hint="the image was removed; ask for a fresh share")

    def _register(self, info: ImageInfo) -> str:
        """Tag the image for every registered project whose current lock it was built from."""
        lock_hash = info.labels.get("envd.lock-hash", "")
        for row in self.app.store.projects():
            try:
                lock = read_lock(lock_path(row))
            except Exception:  # an unreadable lock: that project cannot claim the image
                continue
            if lock is None:
                continue
            plan = make_plan(row.name, lock)
            if plan.lock_hash == lock_hash:
                repository, tag = plan.tag.split(":")
                self.app.engine.tag(info.id, repository, tag)
                self.app.store.record_image(
                    plan.tag, info.id, row.name, "project", plan.final_key, lock_hash, info.size
                )
                self.app.store.set_project_image(row.name, plan.tag, lock_hash)
                self.app.store.set_project_state(row.name, "ready")
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
