"""Sharing a run through an OCI registry: `envctl share run` (`envctl pull run` is
envd/services/runpull.py).

A run goes out as one OCI 1.1 artifact (envd/model/runartifact.py): its record and in-toto
statement as the config, one blob per params, metrics, data and output file, and the
environment image as its subject (pushed by the engine, if the registry lacks it, while the
files go up, a few at once). A blob the registry already has is never sent again (HEAD
before upload; a mount from another repository of the same registry where envd shared it
before). Files are read from the kept copy (envd/gateways/keptfiles.py), else from the
project while their bytes are still the recorded ones; a file that is neither is named and
the share refused. A kept copy is not hashed again: it was kept only once its bytes were
the digest it is named by, and the registry checks every blob against its digest when the
upload completes (a damaged copy is refused there, and named).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from envd import __version__
from envd.errors import NotFound, RegistryError, UsageError, VerificationError
from envd.gateways.engine import Engine
from envd.gateways.files import open_beneath
from envd.gateways.keptfiles import KeptFiles
from envd.gateways.registry import RegistryClient, Repository, fallback_tag
from envd.model.provenance import build_statement, rfc3339
from envd.model.runartifact import (
    RunFile,
    config_json,
    descriptor,
    manifest_json,
    referrers_index,
    tag_for,
)
from envd.model.runrecord import SHA256_RE, RunRecord, parse_metrics
from envd.model.safenames import relative
from envd.progress import Progress, Reporter
from envd.services.fingerprints import ENV_LABEL
from envd.services.projects import Projects
from envd.services.runpull import PulledResult, pull_run
from envd.services.runrefs import ENV_TAG_PREFIX, check_repository, split_run_reference
from envd.services.runs import Runs
from envd.services.runtransfer import PARALLEL, Meter, sha256_of
from envd.services.sharing import Sharing

BuilderId = Callable[[], str]


@dataclass(frozen=True)
class SharedResult:
    reference: str  # REGISTRY/REPO:RUN_ID
    digest: str  # the artifact manifest's
    subject: str  # REGISTRY/REPO@sha256:... (the environment image)
    uploaded: int
    skipped: int
    mounted: int
    bytes_uploaded: int
    notes: tuple[str, ...] = ()


@dataclass
class _Source:
    file: RunFile
    open: Callable[[], BinaryIO]
    present: bool = False  # the registry has it already (counted where it was found)
    kept: str = ""  # the kept copy it is read from (not hashed again), if it is


@dataclass
class _Counts:
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    sent: int = 0
    notes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_upload(self, size: int) -> None:
        with self.lock:
            self.uploaded += 1
            self.sent += size

    def add_skip(self) -> None:
        with self.lock:
            self.skipped += 1


class RunSharing:
    def __init__(
        self,
        runs: Runs,
        projects: Projects,
        sharing: Sharing,
        engine: Engine,
        registry: RegistryClient,
        kept: KeptFiles,
        cache: Path,
        scratch: Path,
        builder_id: BuilderId,
    ) -> None:
        self._runs = runs
        self._projects = projects
        self._sharing = sharing
        self._engine = engine
        self._registry = registry
        self._kept = kept
        self._cache = cache  # manifests and configs read by `runs --from`, by digest
        self._scratch = scratch  # private folder for blobs being checked
        self._builder_id = builder_id

    # ------------------------------------------------------------ out

    def share(self, run_id: str, to: str, shared_by: str, progress: Reporter) -> SharedResult:
        repository = check_repository(to)
        record = self._runs.record(run_id)
        try:
            tag = tag_for(record.id)
            statement = build_statement(
                record, builder_id=self._builder_id(), envd_version=__version__
            )
        except ValueError as exc:
            raise UsageError(
                f"run {record.id} cannot be shared: {exc}",
                hint="declare the run's outputs in envd.yaml `runs: outputs`",
            ) from None
        counts = _Counts()
        sources = self._sources(record, repository, counts)
        self._check_image(record)
        # The engine pushes the environment while the files go up, PARALLEL at once.
        with (
            ThreadPoolExecutor(1, thread_name_prefix="share-env") as pusher,
            ThreadPoolExecutor(PARALLEL, thread_name_prefix="share-run") as senders,
        ):
            pushed = pusher.submit(self._subject, record, repository, progress)
            sends = [senders.submit(self._send, repository, s, counts, progress) for s in sources]
            for send in sends:
                send.result()
            subject = pushed.result()
        config = config_json(record, statement, shared_by, rfc3339(time.time()))
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        config_file = RunFile("params", "config", config_digest, len(config))
        self._send(repository, _Source(config_file, lambda: _bytes_io(config)), _Counts(), progress)
        manifest = manifest_json(
            config_digest,
            len(config),
            [s.file for s in sources],
            subject,
            record.id,
            rfc3339(time.time()),
        )
        digest = self._registry.put_manifest(repository, tag, manifest, _OCI_MANIFEST)
        self._index(repository, subject[0], descriptor(digest, len(manifest), record.id))
        self._remember(repository, [s.file.digest for s in sources])
        progress(Progress("share", f"shared run {record.id} as {repository}:{tag}"))
        return SharedResult(
            f"{repository}:{tag}",
            digest,
            f"{repository}@{subject[0]}",
            counts.uploaded,
            counts.skipped,
            counts.mounted,
            counts.sent,
            tuple(counts.notes),
        )

    def _sources(self, record: RunRecord, repository: Repository, counts: _Counts) -> list[_Source]:
        """Each file of the run and where its recorded bytes are: already in the registry
        (a HEAD; mounted from another repository of it where envd shared it before), else
        in the kept copy or the project, hashed. Refuses, naming them all, when some are in
        none of these; nothing is uploaded before."""
        row = self._projects.resolve_registered(record.project)
        root = row.path
        sources: list[_Source] = []
        for path, text in sorted(record.params.items()):
            raw = text.encode("utf-8")
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            sources.append(_Source(RunFile("params", path, digest, len(raw)), _opener(raw)))
        missing: list[str] = []
        for kind, files in (("data", record.data), ("output", record.outputs)):
            for path, hexdigest in sorted(files.items()):
                if not SHA256_RE.match(hexdigest):
                    continue  # a symlink: recorded by its target, not shared
                there = self._in_registry(repository, "sha256:" + hexdigest, counts)
                if there is not None:
                    file = RunFile(kind, path, "sha256:" + hexdigest, there)  # type: ignore[arg-type]
                    sources.append(_Source(file, _opener(b""), present=True))
                    continue
                found = self._find(root, path, hexdigest)
                if found is None:
                    missing.append(f"{kind} {path}")
                    continue
                opener, size, kept = found
                file = RunFile(kind, path, "sha256:" + hexdigest, size)  # type: ignore[arg-type]
                sources.append(_Source(file, opener, kept=kept))
        if missing:
            raise VerificationError(
                f"run {record.id}: these files no longer have the bytes the run recorded, and "
                "envd did not keep them: " + ", ".join(missing),
                hint="envd keeps outputs and data of runs it records from now on; rerun the "
                f"run (`envctl rerun {record.id}`) and share the new one",
            )
        try:
            spec = self._projects.spec(row).runs
        except Exception:  # a project whose envd.yaml moved on: no metrics file then
            return sources
        several = len(spec.metrics) > 1
        for rel in spec.metrics:
            metrics = _metrics_file(root, rel, record, several)
            if metrics is not None:
                sources.append(
                    _Source(
                        RunFile(
                            "metrics",
                            rel,
                            "sha256:" + hashlib.sha256(metrics).hexdigest(),
                            len(metrics),
                        ),
                        _opener(metrics),
                    )
                )
        return sources

    def _in_registry(self, repository: Repository, digest: str, counts: _Counts) -> int | None:
        """The blob's size when REPOSITORY has it (or it could be mounted there), else None."""
        size = self._registry.blob_size(repository, digest)
        if size is not None:
            counts.skipped += 1
            return size
        for other in self._known_in(repository, digest):
            if self._registry.mount_blob(repository, digest, other):
                size = self._registry.blob_size(repository, digest)
                if size is not None:
                    counts.mounted += 1
                    return size
        return None

    def _find(
        self, root: str, path: str, hexdigest: str
    ) -> tuple[Callable[[], BinaryIO], int, str] | None:
        """(an opener, the size, the kept copy's hex digest or "") of the recorded bytes."""
        kept = self._kept.open(hexdigest)
        if kept is not None:  # not hashed again: see the module's docstring
            with kept:
                size = os.fstat(kept.fileno()).st_size
            return (lambda: self._kept.open(hexdigest) or _gone(path)), size, hexdigest
        try:
            rel = relative(path, "a recorded file")
            with os.fdopen(open_beneath(root, rel), "rb") as file:
                if sha256_of(file) != hexdigest:
                    return None
                size = os.fstat(file.fileno()).st_size
        except OSError:
            return None
        return (lambda: os.fdopen(open_beneath(root, rel), "rb")), size, ""

    def _check_image(self, record: RunRecord) -> None:
        """That the image the run ran in is still here and is the environment it records."""
        if not record.image or not record.environment_hash:
            raise UsageError(
                f"run {record.id} records no image or environment hash; it cannot be shared",
                hint="rerun it with envd (`envctl rerun`) and share the new run",
            )
        info = self._engine.inspect_image(record.image)
        if info is None:
            raise NotFound(
                f"run {record.id} ran in image {record.image[:19]}, which is no longer here",
                hint="rebuild the environment from the run's envd.lock, rerun, and share that run",
            )
        if info.labels.get(ENV_LABEL, "") != record.environment_hash:
            raise VerificationError(
                f"image {record.image[:19]} is not the environment run {record.id} records "
                f"({record.environment_hash[:19]})"
            )

    def _subject(
        self, record: RunRecord, repository: Repository, progress: Reporter
    ) -> tuple[str, int, str]:
        """The run's environment image (checked by `_check_image`) in `repository`, pushed
        by the engine under `env-<environment hash>`: (manifest digest, size, media type)."""
        tag = ENV_TAG_PREFIX + record.environment_hash.removeprefix("sha256:")[:64]
        target = f"{repository}:{tag}"
        progress(Progress("push", f"pushing the environment to {target}"))
        self._engine.tag(record.image, str(repository), tag)
        result = self._engine.push(target, lambda line: progress(Progress("push", line, log=True)))
        found = self._registry.get_manifest(repository, result.digest)
        if found is None:
            raise VerificationError(f"{target}: the registry does not have {result.digest}")
        body, digest = found
        try:
            media_type = str(json.loads(body).get("mediaType", "")) or _OCI_MANIFEST
        except (ValueError, AttributeError):
            media_type = _OCI_MANIFEST
        return digest, len(body), media_type

    def _send(
        self, repository: Repository, source: _Source, counts: _Counts, progress: Reporter
    ) -> None:
        file = source.file
        if source.present:
            return
        if self._registry.has_blob(repository, file.digest):
            counts.add_skip()
            return
        meter = Meter("upload", file, progress)
        try:
            with source.open() as body:
                self._registry.upload_blob(repository, file.digest, file.size, body, meter.add)
        except RegistryError:
            if source.kept:
                self._check_kept(source)
            raise
        meter.done()
        counts.add_upload(file.size)

    def _check_kept(self, source: _Source) -> None:
        """After the registry refused a kept copy: when its bytes are not its digest, it is
        removed and named (a damaged copy); else the registry's refusal stands."""
        with self._kept.open(source.kept) or _gone(source.file.path) as kept:
            if sha256_of(kept) == source.kept:
                return
        os.unlink(self._kept.path(source.kept))
        raise VerificationError(
            f"{source.file.kind} {source.file.path}: envd's kept copy no longer has the bytes "
            "the run recorded (the registry refused it); it was removed",
            hint="the file itself, if unchanged in the project, is used when you share again",
        )

    def _index(self, repository: Repository, subject: str, added: dict[str, object]) -> None:
        """Make the artifact discoverable from its subject: the referrers API does it by
        itself; elsewhere the tag-schema fallback index `sha256-<hex>` lists it."""
        existing, api = self._registry.referrers(repository, subject)
        if api:
            return
        index = referrers_index(existing, added)
        self._registry.put_manifest(repository, fallback_tag(subject), index, _OCI_INDEX)

    # Blobs shared before, by registry host: a cross-repository mount saves the upload.
    def _mounts_file(self) -> Path:
        return self._cache / "mounts.json"

    def _known_in(self, repository: Repository, digest: str) -> list[str]:
        try:
            known = json.loads(self._mounts_file().read_text())
            names = known.get(repository.host, {}).get(digest, [])
            return [str(n) for n in names if n != repository.name][:3]
        except (OSError, ValueError, AttributeError):
            return []

    def _remember(self, repository: Repository, digests: Iterable[str]) -> None:
        path = self._mounts_file()
        try:
            known = json.loads(path.read_text())
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError):
            known = {}
        host = known.setdefault(repository.host, {})
        for digest in digests:
            names = host.setdefault(digest, [])
            if repository.name not in names:
                names.append(repository.name)
                del names[:-8]
        if len(host) > 100_000:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, sort_keys=True))
        os.replace(tmp, path)

    # ------------------------------------------------------------ in

    def pull(self, reference: str, project: str, force: bool, progress: Reporter) -> PulledResult:
        repository, ref = split_run_reference(reference)
        return pull_run(
            self._registry,
            self._projects,
            self._sharing,
            self._runs,
            self._scratch,
            repository,
            ref,
            project,
            force,
            progress,
        )


_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _bytes_io(raw: bytes) -> BinaryIO:
    return io.BytesIO(raw)


def _opener(raw: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(raw)


def _gone(path: str) -> BinaryIO:
    raise VerificationError(f"{path}: its kept copy went away while sharing")


def _metrics_file(root: str, rel: str, record: RunRecord, several: bool) -> bytes | None:
    """The metrics file's bytes when they still say what the run recorded, else None."""
    try:
        with os.fdopen(open_beneath(root, relative(rel, "a metrics file")), "rb") as file:
            raw = file.read((1 << 20) + 1)
    except OSError:
        return None
    if len(raw) > 1 << 20:
        return None
    parsed = parse_metrics(rel, raw.decode("utf-8", "replace"))
    values = {(f"{rel}:{k}" if several else k): float(v) for k, v in parsed.values.items()}
    mine = {k: v for k, v in record.metrics.items() if not several or k.startswith(f"{rel}:")}
    return raw if values == mine and values else None
