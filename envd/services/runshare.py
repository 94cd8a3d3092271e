"""Sharing a run through an OCI registry: `envctl share run` and `envctl pull run`.

A run goes out as one OCI 1.1 artifact (envd/model/runartifact.py): its record and in-toto
statement as the config, one blob per params, metrics, data and output file, and the
environment image as its subject (pushed first, by the engine, if the registry lacks it).
A blob the registry already has is never sent again (HEAD before upload; a mount from
another repository of the same registry where envd shared it before). Files are read from
the project only while their bytes are still the recorded ones, else from the kept copy
(envd/gateways/keptfiles.py); a file that is neither is named and the share refused.

Coming back, everything is checked before the project is touched: the manifest and config
are read with bounds, the run comes from its statement by the hardened import path, every
blob is downloaded to envd's own folder and checked against its digest (and the data,
outputs and params against the statement), and the environment is pulled by digest and
verified as `envctl pull` does. Only then are files placed, through safenames and
open_beneath, never over a different local file without `force`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from envd import __version__
from envd.errors import NotFound, StateError, UsageError, VerificationError
from envd.gateways.engine import Engine
from envd.gateways.files import open_beneath
from envd.gateways.git import commit_and_dirty
from envd.gateways.keptfiles import KeptFiles
from envd.gateways.registry import RegistryClient, Repository, fallback_tag, parse_repository
from envd.model.provenance import build_statement, rfc3339
from envd.model.runartifact import (
    MAX_CONFIG,
    MAX_MANIFEST,
    ArtifactRefused,
    RunFile,
    check_files,
    config_json,
    descriptor,
    manifest_json,
    parse_config,
    parse_manifest,
    referrers_index,
    tag_for,
)
from envd.model.runrecord import SHA256_RE, RunRecord, parse_metrics
from envd.model.safenames import relative
from envd.progress import Progress, Reporter
from envd.services.fingerprints import ENV_LABEL
from envd.services.projects import Projects
from envd.services.runs import Runs
from envd.services.sharing import Sharing

_BLOCK = 1 << 20
PROGRESS_EVERY_S = 0.2
ENV_TAG_PREFIX = "env-"
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


@dataclass(frozen=True)
class PulledResult:
    record: RunRecord
    project: str
    placed: tuple[str, ...]
    unchanged: tuple[str, ...]
    kept: tuple[str, ...]  # local files that differ, left as they are
    image: str
    environment_hash: str
    commit: str  # the checkout's
    added: bool


@dataclass
class _Source:
    file: RunFile
    open: Callable[[], BinaryIO]
    present: bool = False  # the registry has it already (counted where it was found)


@dataclass
class _Counts:
    uploaded: int = 0
    skipped: int = 0
    mounted: int = 0
    sent: int = 0
    notes: list[str] = field(default_factory=list)


def split_run_reference(reference: str) -> tuple[Repository, str]:
    """REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:... -> (repository, tag or digest)."""
    if "@" in reference:
        name, _, ref = reference.partition("@")
    else:
        slash = reference.rfind("/")
        colon = reference.rfind(":")
        if colon <= slash:
            raise UsageError(
                f"{reference!r} names no run", hint="e.g. localhost:5000/team/churn:RUN_ID"
            )
        name, ref = reference[:colon], reference[colon + 1 :]
    repository = parse_repository(name)
    if not repository.host or not repository.name or not ref:
        raise UsageError(
            f"{reference!r} is not REGISTRY/REPO:RUN", hint="e.g. 127.0.0.1:5000/team/p:RUN"
        )
    return repository, ref


def is_shared_reference(text: str) -> bool:
    """Whether a run is named as REGISTRY/REPO:RUN (or @sha256:...) rather than by its id."""
    return "/" in text and (":" in text.rpartition("/")[2] or "@" in text)


def check_repository(to: str) -> Repository:
    if not to or " " in to or to.startswith("-") or "@" in to:
        raise UsageError(f"{to!r} is not REGISTRY/REPO", hint="e.g. localhost:5000/team/churn")
    repository = parse_repository(to)
    if not repository.name or ":" in repository.name:
        raise UsageError(
            f"{to!r} is not REGISTRY/REPO (a run is tagged by its id)",
            hint="e.g. localhost:5000/team/churn",
        )
    return repository


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
        subject = self._subject(record, repository, progress)
        for source in sources:
            self._send(repository, source, counts, progress)
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
                opener, size = found
                file = RunFile(kind, path, "sha256:" + hexdigest, size)  # type: ignore[arg-type]
                sources.append(_Source(file, opener))
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
    ) -> tuple[Callable[[], BinaryIO], int] | None:
        kept = self._kept.open(hexdigest)
        if kept is not None:
            with kept:
                if _sha256(kept) == hexdigest:
                    size = os.fstat(kept.fileno()).st_size
                    return (lambda: self._kept.open(hexdigest) or _gone(path)), size
        try:
            rel = relative(path, "a recorded file")
            with os.fdopen(open_beneath(root, rel), "rb") as file:
                if _sha256(file) != hexdigest:
                    return None
                size = os.fstat(file.fileno()).st_size
        except OSError:
            return None
        return (lambda: os.fdopen(open_beneath(root, rel), "rb")), size

    def _subject(
        self, record: RunRecord, repository: Repository, progress: Reporter
    ) -> tuple[str, int, str]:
        """The run's environment image in `repository`: (manifest digest, size, media type).
        Pushed by the engine, under `env-<environment hash>`, after checking that the image
        the run ran in is still here and is that environment."""
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
            counts.skipped += 1
            return
        meter = _Meter("upload", file, progress)

        def sent(n: int) -> None:
            meter.add(n)

        with source.open() as body:
            self._registry.upload_blob(repository, file.digest, file.size, body, sent)
        meter.done()
        counts.uploaded += 1
        counts.sent += file.size

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
        found = self._registry.get_manifest(repository, ref, limit=MAX_MANIFEST)
        if found is None:
            raise NotFound(
                f"no run {reference} in the registry", hint=f"`envctl runs --from {repository}`"
            )
        artifact = parse_manifest(found[0], reference)
        config = self._registry.get_blob(repository, artifact.config_digest, limit=MAX_CONFIG)
        shared = parse_config(config, reference, time.time())
        record = replace(shared.record, origin=reference)
        check_files(artifact, record, reference)
        self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_room(self._scratch, sum(f.size for f in artifact.files), reference)
        with tempfile.TemporaryDirectory(prefix="pull-run-", dir=self._scratch) as tmp:
            fetched: list[tuple[RunFile, Path]] = []
            for i, file in enumerate(artifact.files):
                target = Path(tmp) / str(i)
                self._fetch(repository, file, target, progress)
                fetched.append((file, target))
            # Every blob checked: only now is the project looked up (registered if new).
            row = self._projects.resolve(project or record.project)
            progress(Progress("pull", f"pulling the environment {repository}@{artifact.subject}"))
            received = self._sharing.pull(f"{repository}@{artifact.subject}", progress)
            if record.environment_hash and received.environment_hash != record.environment_hash:
                raise VerificationError(
                    f"{reference}: its environment image is {received.environment_hash[:19]}, "
                    f"the run records {record.environment_hash[:19]}; nothing placed"
                )
            placed, unchanged, kept = _place(row.path, fetched, force)
        added = self._runs.import_record(record)
        commit, _ = commit_and_dirty(row.path)
        return PulledResult(
            record,
            row.name,
            tuple(placed),
            tuple(unchanged),
            tuple(kept),
            received.image,
            received.environment_hash,
            commit,
            added,
        )

    def _fetch(
        self, repository: Repository, file: RunFile, target: Path, progress: Reporter
    ) -> None:
        """Download one blob to envd's own folder, checking size and digest as it comes."""
        sha = hashlib.sha256()
        done = 0
        meter = _Meter("download", file, progress)
        with (
            self._registry.open_digest(repository, file.digest, file.size) as blob,
            open(target, "wb") as out,
        ):
            while block := blob.read(_BLOCK):
                sha.update(block)
                out.write(block)
                done += len(block)
                meter.add(len(block))
        meter.done()
        if done != file.size or "sha256:" + sha.hexdigest() != file.digest:
            raise ArtifactRefused(
                f"{repository}: the blob for {file.kind} {file.path} does not match its digest "
                f"{file.digest[:19]} ({done} bytes received); nothing was written to the project",
                hint="the registry's copy is damaged or was changed: ask for a fresh share",
            )


class _Meter:
    """A transfer's progress: bytes and rate, at most every PROGRESS_EVERY_S (a block of a
    large file is 8 KiB on the wire: one event each would flood the stream)."""

    def __init__(self, step: str, file: RunFile, progress: Reporter) -> None:
        self._step = step
        self._file = file
        self._progress = progress
        self._done = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def add(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._shown >= PROGRESS_EVERY_S:
            self._shown = now
            self._emit(now)

    def done(self) -> None:
        self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        self._progress(
            Progress(
                self._step,
                f"{self._file.path} {_human(self._done)} of {_human(self._file.size)}, "
                f"{_human(int(rate))}/s",
                self._done,
                self._file.size,
                elapsed_s=elapsed,
            )
        )


_RESERVE = 1 << 30  # what a pull leaves free on the disk of envd's home


def _check_room(folder: Path, total: int, reference: str) -> None:
    """The sizes a manifest declares are the registry's word, and the blobs must land in
    envd's home before they are checked: refuse a pull the disk cannot hold (less a reserve)
    before a byte arrives, instead of filling the disk."""
    free = shutil.disk_usage(folder).free
    if total > free - _RESERVE:
        raise StateError(
            f"{reference}: its files take {_human(total)}, and {folder} has "
            f"{_human(max(free, 0))} free (envd keeps {_human(_RESERVE)} free); nothing pulled",
            hint="free space on that disk (`df -h`), then pull again",
        )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _bytes_io(raw: bytes) -> BinaryIO:
    return io.BytesIO(raw)


def _opener(raw: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(raw)


def _gone(path: str) -> BinaryIO:
    raise VerificationError(f"{path}: its kept copy went away while sharing")


def _sha256(file: BinaryIO) -> str:
    sha = hashlib.sha256()
    for block in iter(lambda: file.read(_BLOCK), b""):
        sha.update(block)
    return sha.hexdigest()


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


def _place(
    root: str, fetched: list[tuple[RunFile, Path]], force: bool
) -> tuple[list[str], list[str], list[str]]:
    """Copy checked blobs into the project: (placed, already identical, kept as they were)."""
    placed: list[str] = []
    unchanged: list[str] = []
    kept: list[str] = []
    for file, source in fetched:
        rel = relative(file.path, "a shared file")
        try:
            with os.fdopen(open_beneath(root, rel), "rb") as current:
                local = "sha256:" + _sha256(current)
        except FileNotFoundError:
            local = ""
        except OSError as exc:
            raise ArtifactRefused(
                f"{file.path}: cannot be placed in the project ({exc.strerror}); refused",
                hint="a link or a folder is in the way: move it, then pull again",
            ) from None
        if local == file.digest:
            unchanged.append(file.path)
            continue
        if local and not force:
            kept.append(file.path)
            continue
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        with ExitStack() as stack:
            out = stack.enter_context(
                os.fdopen(open_beneath(root, rel, flags, 0o644, make_dirs=True), "wb")
            )
            src = stack.enter_context(open(source, "rb"))
            shutil.copyfileobj(src, out, _BLOCK)
        placed.append(file.path)
    return placed, unchanged, kept
