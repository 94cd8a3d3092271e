"""The project on a remote engine: a volume kept in step with the project directory.

A remote engine cannot bind-mount the project, so its warm container mounts the project's
volume (`envd-<owner12>-project-<name>`) at the workdir. Before each command `up` sends what
changed on the host; after it `down` brings back what the command created, changed or
deleted. Both are the same three-way sync against the last-synced manifest (envd/model/
projectsync.py), stored per project as a 0600 JSON file in the daemon's state folder. `up`
reads the volume only when the host changed, so an unchanged project costs one lstat per
host file and no engine call; `down` always lists the volume (one `find`).

`runs:` data and outputs lie inside the project (the spec refuses others); they move like any
file, at any size, where other files over the size bound stay where they are (and are named).

What comes back is untrusted (a container wrote it): names pass `safenames.relative`, files
are written through `files.open_beneath` (no link on the way is followed), bytes are counted
as they arrive (per file, per sync, and the host keeps MIN_FREE_BYTES free) and a file over a
bound is never written (the host's copy is kept), and a listing not known complete deletes
nothing here.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from envd.gateways.engine_files import Outgoing
from envd.model import names
from envd.model.plan import WORKDIR
from envd.model.projectsync import (
    MAX_FILE_BYTES,
    MAX_SYNC_BYTES,
    MIN_FREE_BYTES,
    Entry,
    Listing,
    Stat,
    SyncPlan,
    SyncState,
    after,
    declared,
    entries,
    fetch_groups,
    over_bound,
    plan,
    state_from_json,
    state_to_json,
    to_hash,
    unchanged,
)
from envd.model.safenames import UnsafeName
from envd.progress import Progress, Reporter
from envd.services.projecthost import (
    TooLarge,
    free_bytes,
    remove_host,
    scan_host,
    sha256_of,
    write_host,
)

log = logging.getLogger(__name__)

BIG_FILE = 8 << 20  # files from this size on report their progress
ByteSink = Callable[[str, int, int], None]
MemberSink = Callable[[str, tarfile.TarInfo, IO[bytes] | None], None]
Seen = tuple[int, int]  # (size, mtime_ns) as one side's listing shows a file
Pulled = dict[str, tuple[Entry, Seen, Seen]]  # host path: content, host and volume stat


class VolumeFiles(Protocol):
    """What envd/gateways/engine_files.py offers (a fake in tests)."""

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> str: ...

    def listing(self, container: str, workdir: str) -> Listing: ...

    def hashes(self, container: str, workdir: str, paths: Sequence[str]) -> dict[str, str]: ...

    def read(
        self,
        container: str,
        workdir: str,
        groups: Iterable[tuple[str, frozenset[str]]],
        on_member: MemberSink,
        on_bytes: ByteSink | None = ...,
    ) -> None: ...

    def write(
        self,
        container: str,
        workdir: str,
        files: Sequence[Outgoing],
        uid: int,
        gid: int,
        on_bytes: ByteSink | None = ...,
    ) -> dict[str, tuple[int, int]]: ...

    def remove(self, container: str, workdir: str, paths: Sequence[str]) -> None: ...

    def own_workdir(self, container: str, workdir: str, uid: int, gid: int) -> None: ...


@dataclass
class SyncReport:
    """What one sync did, for the caller to show."""

    sent: int = 0
    removed_remote: int = 0
    received: int = 0
    removed_local: int = 0
    notes: list[str] = field(default_factory=list)  # conflicts and files left behind


@dataclass
class _Project:
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: SyncState | None = None


class _Budget:
    """What one sync may receive: undeclared files up to `per_file` each and `total` in all
    (counted as they arrive), and any file only while the host keeps MIN_FREE_BYTES free."""

    def __init__(
        self,
        root: str,
        data: Sequence[str],
        per_file: int,
        total: int,
        free: Callable[[str], int],
    ) -> None:
        self._root, self._data, self._per_file, self._total = root, data, per_file, total
        self._free = free
        self.used = 0  # undeclared bytes received so far

    def refusal(self, rel: str, size: int) -> str:
        """Why `size` bytes of rel may not arrive ("" when they may)."""
        if not declared(rel, self._data):
            if size > self._per_file:
                return (
                    f"{_size(size)} arriving, over the {_size(self._per_file)} bound; declare "
                    "it under `runs: data:` or `outputs:` in envd.yaml to move it"
                )
            if self.used + size > self._total:
                return (
                    f"{_size(size)} arriving would pass the {_size(self._total)} a sync "
                    "brings back; the next sync brings more"
                )
        try:
            free = self._free(self._root)
        except OSError:
            free = 0
        if free - size < MIN_FREE_BYTES:
            return (
                f"{_size(size)} arriving would leave less than {_size(MIN_FREE_BYTES)} free "
                "here; free some space"
            )
        return ""

    def received(self, rel: str, size: int) -> None:
        if not declared(rel, self._data):
            self.used += size


class ProjectSync:
    def __init__(
        self,
        files: VolumeFiles,
        state_dir: Path,
        namespace: str,
        owner: str,
        engine: str,
        max_file_bytes: int = MAX_FILE_BYTES,
        max_sync_bytes: int = MAX_SYNC_BYTES,
        free: Callable[[str], int] = free_bytes,
    ) -> None:
        self._files = files
        self._max = max_file_bytes
        self._max_sync = max_sync_bytes
        self._free = free
        self._dir = state_dir
        self._namespace = namespace
        self._owner = owner
        self._engine = engine  # which engine (DOCKER_HOST): a state of another one is void
        self._projects: dict[str, _Project] = {}
        self._lock = threading.Lock()
        self._volumes: dict[str, str] = {}  # volume -> its creation time, once ensured

    def volume_name(self, project: str) -> str:
        return names.project_volume(self._namespace, project)

    def volume(self, project: str) -> str:
        """The project's volume, created (labelled) unless it exists."""
        name = self.volume_name(project)
        created = self._files.ensure_volume(
            name,
            {
                names.ROLE_LABEL: names.ROLE_PROJECT_FILES,
                names.PROJECT_LABEL: project,
                names.OWNER_LABEL: self._owner,
            },
        )
        with self._lock:
            self._volumes[name] = created
        return name

    def _project(self, project: str) -> _Project:
        with self._lock:
            return self._projects.setdefault(project, _Project())

    # ------------------------------------------------------------ the two directions

    def up(
        self,
        project: str,
        project_dir: str,
        container: str,
        uid: int,
        gid: int,
        data: Sequence[str] = (),
        progress: Reporter | None = None,
    ) -> SyncReport:
        """Before a command: the volume gets the host's changes. The volume is read only when
        there are any (so a change made there meanwhile, say by a `docker exec`, is a named
        conflict, not overwritten): an unchanged project costs no engine call at all."""
        return self._sync(project, project_dir, container, uid, gid, data, progress, False)

    def down(
        self,
        project: str,
        project_dir: str,
        container: str,
        uid: int,
        gid: int,
        data: Sequence[str] = (),
    ) -> SyncReport:
        """After a command: what it created, changed or deleted comes back; conflicts named."""
        return self._sync(project, project_dir, container, uid, gid, data, None, True)

    # ------------------------------------------------------------ one sync

    def _sync(
        self,
        project: str,
        root: str,
        container: str,
        uid: int,
        gid: int,
        data: Sequence[str],
        progress: Reporter | None,
        after_command: bool,
    ) -> SyncReport:
        p = self._project(project)
        with p.lock:
            return self._locked_sync(p, project, root, container, uid, gid, data, progress,
                                     after_command)  # fmt: skip

    def _locked_sync(
        self,
        p: _Project,
        project: str,
        root: str,
        container: str,
        uid: int,
        gid: int,
        data: Sequence[str],
        progress: Reporter | None,
        after_command: bool,
    ) -> SyncReport:
        volume = self.volume_name(project)
        with self._lock:
            created = self._volumes.get(volume)
        if created is None:  # e.g. a daemon restarted between a command's start and end
            self.volume(project)
            created = self._volumes[volume]
        state = p.state if p.state is not None else self._load(project)
        fresh = not state.matches(volume, created, self._engine)
        if fresh:  # a new volume (or engine): it holds nothing of ours yet
            state = SyncState(volume, created, self._engine, files={})
        base = state.files
        report = SyncReport()

        held: set[str] = set()
        host_stats = self._bounded(scan_host(root), data, "here", report, held)
        if not fresh and not after_command and unchanged(base, host_stats, "host"):
            return report  # the common case: one lstat per file, nothing else
        moved = to_hash(base, host_stats, "host")
        host_hashes = {}
        for path in moved:
            digest = sha256_of(os.path.join(root, path))
            if digest is None:  # vanished or unreadable since the scan: not this time
                host_stats.pop(path, None)
            else:
                host_hashes[path] = digest
        host = entries(base, host_stats, "host", host_hashes)

        engine_stats: dict[str, Stat] | None = None
        engine: dict[str, Entry] | None = None
        complete, why = True, ""
        if fresh or after_command or not plan(base, host, None, held=held).empty:
            listed = self._files.listing(container, WORKDIR)
            complete, why = listed.complete, listed.why
            engine_stats = self._bounded(dict(listed.files), data, "on the engine", report, held)
            changed = to_hash(base, engine_stats, "engine")
            engine = entries(
                base, engine_stats, "engine", self._files.hashes(container, WORKDIR, changed)
            )
        todo = plan(base, host, engine, complete=complete, held=held)
        if not complete:
            left = len(set(todo.held) - held)
            report.notes.append(
                f"the engine's listing of the project was incomplete ({why}): nothing "
                f"was deleted here this time and {left} paths it left out were left as they "
                "are; the next sync tries again"
            )
            log.warning("%s: incomplete listing (%s): %d paths held", project, why, left)
        for path in todo.clashes:
            report.notes.append(
                f"not synced: {path} is a file or link here and a folder on the engine; "
                "rename one of them"
            )
        if fresh:
            self._files.own_workdir(container, WORKDIR, uid, gid)
        pushed, pulled = self._apply(todo, root, container, uid, gid, host_stats, engine_stats,
                                     data, progress, report.notes)  # fmt: skip
        files = after(base, host, host_stats, engine_stats, todo, pushed, pulled)
        for rel, target in todo.pull:
            if target not in pulled and target == rel:  # not written: try again next time
                if rel in base:
                    files[rel] = base[rel]
                else:
                    files.pop(rel, None)
        report.sent, report.removed_remote = len(todo.push), len(todo.remove_remote)
        report.received, report.removed_local = len(pulled), len(todo.remove_local)
        report.notes[:0] = [c.message() for c in todo.conflicts]
        if fresh or files != base:  # (an unchanged sync writes nothing)
            p.state = SyncState(volume, created, self._engine, files)
            self._save(project, p.state)
        else:
            p.state = state
        if not todo.empty:
            log.info(
                "%s: synced (%d sent, %d removed there, %d back, %d removed here, %d conflicts)",
                project, report.sent, report.removed_remote, report.received,
                report.removed_local, len(todo.conflicts),
            )  # fmt: skip
        return report

    def _bounded(
        self,
        listing: dict[str, Stat],
        data: Sequence[str],
        where: str,
        report: SyncReport,
        held: set[str],
    ) -> dict[str, Stat]:
        """Leave out files over the size bound that `runs:` does not declare (named), new or
        synced before: they are held (neither side's copy replaces or deletes the other)."""
        for path, st in list(listing.items()):
            if over_bound(path, st, data, self._max):
                del listing[path]
                held.add(path)
                report.notes.append(
                    f"not synced: {path} ({_size(st.size)} {where}) is over the "
                    f"{_size(self._max)} bound; declare it under `runs: data:` or "
                    "`outputs:` in envd.yaml to move it"
                )
        return listing

    def _apply(
        self,
        todo: SyncPlan,
        root: str,
        container: str,
        uid: int,
        gid: int,
        host_stats: Mapping[str, Stat],
        engine_stats: Mapping[str, Stat] | None,
        data: Sequence[str],
        progress: Reporter | None,
        notes: list[str],
    ) -> tuple[dict[str, Seen], Pulled]:
        real = os.path.realpath(root)  # (open_beneath follows no link, the root's own either)
        # Deletions first: a link the engine replaced by a folder goes before the folder's
        # files arrive. Only what is here as the listing before showed it is deleted.
        for path in todo.remove_local:
            remove_host(real, path, host_stats.get(path))
        # Pulls next: a conflict's engine copy is read before the host's replaces it.
        pulled: Pulled = {}
        if todo.pull:
            assert engine_stats is not None  # a pull follows a listing
            dest = dict(todo.pull)
            budget = _Budget(real, data, self._max, self._max_sync, self._free)

            refused: set[str] = set()  # (named in a note already)

            def receive(rel: str, member: tarfile.TarInfo, body: IO[bytes] | None) -> None:
                target = dest[rel]
                refused.add(rel)
                size = member.size if body is not None else 0
                if why := budget.refusal(rel, size):
                    notes.append(f"not brought back: {target} ({why}); the copy here is kept")
                    log.warning("not bringing back %s: %s", target, why)
                    return
                try:
                    entry, host_seen = write_host(real, target, member, body, size)
                except TooLarge as exc:
                    notes.append(
                        f"not brought back: {target} (more bytes arrived than its archive "
                        f"header said: {exc}); the copy here is kept"
                    )
                    log.warning("not bringing back %s: more bytes than announced", target)
                    return
                except UnsafeName as exc:
                    notes.append(f"not brought back: {exc.message}")
                    return
                except OSError as exc:  # a folder here where the engine has a file, say
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        log.warning("not writing %s: a folder on its way is a link", target)
                        why = "a folder on its way is a link or a file here"
                    else:
                        why = f"cannot be written here ({exc})"
                    notes.append(f"not brought back: {target} {why}")
                    return
                budget.received(rel, size)
                refused.discard(rel)
                es = engine_stats.get(rel)
                pulled[target] = (entry, host_seen, (es.size, es.mtime_ns) if es else (-1, -1))

            groups = fetch_groups(dest, engine_stats)
            sink = _progress_sink(progress, "receiving")
            self._files.read(container, WORKDIR, groups, receive, sink)
            missing = set(dest) - refused - {r for r, t in todo.pull if t in pulled}
            if missing:
                log.warning("not brought back (gone meanwhile?): %s", sorted(missing)[:10])
        if todo.remove_remote:
            self._files.remove(container, WORKDIR, list(todo.remove_remote))
        pushed: dict[str, Seen] = {}
        if todo.push:
            outgoing = [Outgoing(p, os.path.join(root, p), host_stats[p]) for p in todo.push]
            sink = _progress_sink(progress, "sending")
            pushed = self._files.write(container, WORKDIR, outgoing, uid, gid, sink)
        return pushed, pulled

    # ------------------------------------------------------------ the state file

    def _path(self, project: str) -> Path:
        return self._dir / f"{project}.json"

    def _load(self, project: str) -> SyncState:
        try:
            return state_from_json(json.loads(self._path(project).read_text()))
        except (OSError, ValueError):
            return SyncState()

    def _save(self, project: str, state: SyncState) -> None:
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{project}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state_to_json(state), f, separators=(",", ":"))
            os.replace(tmp, self._path(project))  # mkstemp made it 0600
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def forget(self, project: str) -> None:
        """Drop a project's sync state (its volume is gone or about to be)."""
        with self._lock:
            self._projects.pop(project, None)
        self._path(project).unlink(missing_ok=True)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


def _progress_sink(progress: Reporter | None, verb: str) -> ByteSink | None:
    """Progress of large files only, about every 5 %."""
    if progress is None:
        return None
    shown: dict[str, int] = {}

    def sink(path: str, done: int, total: int) -> None:
        if total < BIG_FILE:
            return
        step = max(total // 20, 1)
        if done < total and done - shown.get(path, -step) < step:
            return
        shown[path] = done
        progress(Progress("sync", f"{verb} {path}", current=done, total=total))

    return sink
