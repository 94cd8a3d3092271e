"""`envctl pull run`: a shared run fetched from an OCI registry, checked before the project
is touched (envd/services/runshare.py sends it).

The manifest and config are read with bounds, the run comes from its statement by the
hardened import path, every blob is downloaded to envd's own folder (a few at once) and
checked against its digest as it comes (and the data, outputs and params against the
statement), and the environment is pulled by digest (meanwhile, by the engine) and verified
as `envctl pull` does.
Only then are files placed, through safenames and the beneath-the-root helpers, never over a
different local file without `force`: a checked blob is moved into place where envd's folder
and the project share a file system, else copied.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from envd.errors import NotFound, StateError, VerificationError
from envd.gateways.files import open_beneath, rename_beneath
from envd.gateways.git import commit_and_dirty
from envd.gateways.registry import RegistryClient, Repository
from envd.model.runartifact import (
    MAX_CONFIG,
    MAX_MANIFEST,
    ArtifactRefused,
    RunFile,
    check_files,
    parse_config,
    parse_manifest,
)
from envd.model.runrecord import RunRecord
from envd.model.safenames import relative
from envd.progress import Progress, Reporter
from envd.services.projects import Projects
from envd.services.runs import Runs
from envd.services.runtransfer import BLOCK, PARALLEL, Meter, human, sha256_of
from envd.services.sharing import Sharing

_RESERVE = 1 << 30  # what a pull leaves free on the disk of envd's home
_RECV_BLOCK = 4 << 20


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


def pull_run(
    registry: RegistryClient,
    projects: Projects,
    sharing: Sharing,
    runs: Runs,
    scratch: Path,
    repository: Repository,
    ref: str,
    project: str,
    force: bool,
    progress: Reporter,
) -> PulledResult:
    """Pull REPOSITORY:REF (a tag or a digest) into `project` (default: the run's)."""
    reference = f"{repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"
    found = registry.get_manifest(repository, ref, limit=MAX_MANIFEST)
    if found is None:
        raise NotFound(
            f"no run {reference} in the registry", hint=f"`envctl runs --from {repository}`"
        )
    artifact = parse_manifest(found[0], reference)
    config = registry.get_blob(repository, artifact.config_digest, limit=MAX_CONFIG)
    shared = parse_config(config, reference, time.time())
    record = replace(shared.record, origin=reference)
    check_files(artifact, record, reference)
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_room(scratch, sum(f.size for f in artifact.files), reference)
    with (
        tempfile.TemporaryDirectory(prefix="pull-run-", dir=scratch) as tmp,
        ThreadPoolExecutor(1, thread_name_prefix="pull-env") as puller,
    ):
        # The engine pulls (and envd verifies) the environment while the blobs come.
        progress(Progress("pull", f"pulling the environment {repository}@{artifact.subject}"))
        environment = puller.submit(sharing.pull, f"{repository}@{artifact.subject}", progress)
        fetched = [(file, Path(tmp) / str(i)) for i, file in enumerate(artifact.files)]
        _each(lambda item: fetch(registry, repository, *item, progress), fetched)
        received = environment.result()
        # Every blob checked: only now is the project looked up (registered if new).
        row = projects.resolve(project or record.project)
        if record.environment_hash and received.environment_hash != record.environment_hash:
            raise VerificationError(
                f"{reference}: its environment image is {received.environment_hash[:19]}, "
                f"the run records {record.environment_hash[:19]}; nothing placed"
            )
        placed, unchanged, kept = place(row.path, fetched, force)
    added = runs.import_record(record)
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


def _each(work: Callable[[tuple[RunFile, Path]], None], items: list[tuple[RunFile, Path]]) -> None:
    """`work` on each item, PARALLEL at once; the first failure is raised (after the rest)."""
    if len(items) < 2:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="pull-run") as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def fetch(
    registry: RegistryClient,
    repository: Repository,
    file: RunFile,
    target: Path,
    progress: Reporter,
) -> None:
    """Download one blob to envd's own folder, checking size and digest as it comes."""
    sha = hashlib.sha256()
    done = 0
    meter = Meter("download", file, progress)
    with (
        registry.open_digest(repository, file.digest, file.size) as blob,
        open(target, "wb") as out,
    ):
        while block := blob.read(_RECV_BLOCK):
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


def _check_room(folder: Path, total: int, reference: str) -> None:
    """The sizes a manifest declares are the registry's word, and the blobs must land in
    envd's home before they are checked: refuse a pull the disk cannot hold (less a reserve)
    before a byte arrives, instead of filling the disk."""
    free = shutil.disk_usage(folder).free
    if total > free - _RESERVE:
        raise StateError(
            f"{reference}: its files take {human(total)}, and {folder} has "
            f"{human(max(free, 0))} free (envd keeps {human(_RESERVE)} free); nothing pulled",
            hint="free space on that disk (`df -h`), then pull again",
        )


def place(
    root: str, fetched: list[tuple[RunFile, Path]], force: bool
) -> tuple[list[str], list[str], list[str]]:
    """Put checked blobs into the project: (placed, already identical, kept as they were)."""
    placed: list[str] = []
    unchanged: list[str] = []
    kept: list[str] = []
    for file, source in fetched:
        rel = relative(file.path, "a shared file")
        try:
            with os.fdopen(open_beneath(root, rel), "rb") as current:
                local = "sha256:" + sha256_of(current)
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
        os.chmod(source, 0o644)
        try:
            moved = rename_beneath(source, root, rel, make_dirs=True)
        except OSError as exc:
            raise ArtifactRefused(
                f"{file.path}: cannot be placed in the project ({exc.strerror}); refused",
                hint="a link or a folder is in the way: move it, then pull again",
            ) from None
        if not moved:  # another file system: a copy
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            with ExitStack() as stack:
                out = stack.enter_context(
                    os.fdopen(open_beneath(root, rel, flags, 0o644, make_dirs=True), "wb")
                )
                src = stack.enter_context(open(source, "rb"))
                shutil.copyfileobj(src, out, BLOCK)
        placed.append(file.path)
    return placed, unchanged, kept
