"""Syncing a project with a volume on a remote engine: manifests, the three-way plan, conflicts.

A remote engine (tcp://, ssh://) cannot see the project directory, so the warm container mounts
a volume at the workdir instead, and envd keeps the two in step around each `enter`: before the
command what changed on the host goes up, after it what the command created, changed or
deleted comes back. Both directions are one three-way comparison against the manifest of the
last sync (`base`): a side changed a path when its content (sha256, the executable bit, a
link's target) differs from the base. Hashes are computed only where a file's size or mtime
moved since the base saw it, so an unchanged project costs one lstat per file and no transfer.

A path changed on both sides to different content is a conflict: the host copy is kept (and
sent up again, so both sides agree), and the engine's copy is written beside it as
`NAME.envd-remote` for the user to compare; such copies never move themselves.

What never moves: `.git` (run records read the commit on the host; a half-synced object store
would be worse than none), byte-code and tool caches, a host virtualenv, sockets and devices,
names `envd.model.safenames.relative` refuses, and files over `MAX_FILE_BYTES` unless `runs:`
declares them (data and outputs move at any size, as long as the host keeps free space).

The engine's listing is untrusted (a container can make `find` fail or lie): a listing that
is not known complete deletes nothing here, and a path it leaves out is held as it was
(`SyncPlan.held`) rather than read as deleted; sizes are checked again on what arrives.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envd.model.safenames import UnsafeName, relative

FILE = "f"
LINK = "l"
CONFLICT_SUFFIX = ".envd-remote"
MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_SYNC_BYTES = 4 * MAX_FILE_BYTES  # undeclared bytes received in one sync
MIN_FREE_BYTES = 1 << 30  # free space a sync leaves on the host's filesystem
MAX_LISTING_BYTES = 256 << 20  # one listing's output
# Folder (or file) names that never move, wherever they are in the project.
IGNORED_NAMES = frozenset(
    {
        ".git",
        "__pycache__",
        ".venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
    }
)
IGNORED_SUFFIXES = (".pyc", CONFLICT_SUFFIX)
STATE_VERSION = 1


@dataclass(frozen=True)
class Stat:
    """What one side's listing says of a path without reading it."""

    kind: str  # FILE or LINK
    size: int
    mtime_ns: int
    mode: int  # permission bits
    target: str = ""  # a link's target


@dataclass(frozen=True)
class Entry:
    """A path's content as far as syncing cares."""

    kind: str
    sha256: str  # files; "" for links
    mode: int
    target: str = ""
    size: int = 0

    def same(self, other: Entry | None) -> bool:
        """Same content: kind, bytes (or link target) and executable bit (as git compares)."""
        return (
            other is not None
            and self.kind == other.kind
            and self.sha256 == other.sha256
            and self.target == other.target
            and (self.kind == LINK or bool(self.mode & 0o100) == bool(other.mode & 0o100))
        )


@dataclass(frozen=True)
class Synced:
    """One path as of the last sync: its content, and how each side's listing showed it then."""

    entry: Entry
    host: tuple[int, int] = (-1, -1)  # (size, mtime_ns) on the host; (-1, -1): unknown
    engine: tuple[int, int] = (-1, -1)  # the same in the volume


Base = Mapping[str, Synced]


@dataclass(frozen=True)
class Listing:
    """One side's files and links; `complete` False when the listing may leave some out (find
    failed part way, a name was refused): what it leaves out is then unknown, not deleted."""

    files: dict[str, Stat]
    complete: bool = True
    why: str = ""  # why not complete, for the user
    refused: tuple[str, ...] = ()  # names left out as unsafe (scan_host leaves them out too)


@dataclass(frozen=True)
class SyncState:
    """What the daemon keeps per project between syncs (a 0600 JSON file)."""

    volume: str = ""
    volume_id: str = ""  # the volume's identity: a volume made anew starts from nothing
    engine: str = ""  # DOCKER_HOST of the engine the volume is on
    files: dict[str, Synced] = field(default_factory=dict)

    def matches(self, volume: str, created: str, engine: str) -> bool:
        return (self.volume, self.volume_id, self.engine) == (volume, created, engine)


# ---------------------------------------------------------------- what moves


def ignored_name(relpath: str) -> bool:
    """Whether a path never moves by its name (the size bound is `skipped_size`)."""
    parts = relpath.split("/")
    return any(p in IGNORED_NAMES for p in parts) or relpath.endswith(IGNORED_SUFFIXES)


def declared(relpath: str, paths: Iterable[str]) -> bool:
    """Whether `runs:` names relpath (`dir/` entries name everything below them)."""
    return any(p in (".", relpath) or (p.endswith("/") and relpath.startswith(p)) for p in paths)


def over_bound(relpath: str, stat: Stat, data: Iterable[str], limit: int = MAX_FILE_BYTES) -> bool:
    """A file too large to move on every enter, unless `runs:` declares it."""
    return stat.kind == FILE and stat.size > limit and not declared(relpath, data)


# ---------------------------------------------------------------- hashing only what moved


def to_hash(base: Base, listing: Mapping[str, Stat], side: str) -> list[str]:
    """The files on one side ("host" or "engine") whose size or mtime moved since the base."""
    out = []
    for path, stat in listing.items():
        if stat.kind != FILE:
            continue
        known = base.get(path)
        seen = (stat.size, stat.mtime_ns)
        if known is None or known.entry.kind != FILE or getattr(known, side) != seen:
            out.append(path)
    return sorted(out)


def unchanged(base: Base, listing: Mapping[str, Stat], side: str) -> bool:
    """Whether one side's listing shows exactly the base: same paths, stat and link targets."""
    if listing.keys() != base.keys():
        return False
    for path, stat in listing.items():
        known = base[path]
        if stat.kind != known.entry.kind:
            return False
        if stat.kind == LINK:
            if stat.target != known.entry.target:
                return False
        elif getattr(known, side) != (stat.size, stat.mtime_ns) or (
            bool(stat.mode & 0o100) != bool(known.entry.mode & 0o100)
        ):
            return False
    return True


def entries(
    base: Base, listing: Mapping[str, Stat], side: str, hashes: Mapping[str, str]
) -> dict[str, Entry]:
    """One side's content: hashes given for what moved, the base's for what did not.

    A moved file with no hash (the engine could not hash it) gets a digest no base holds, so
    it counts as changed and is brought back (and hashed as it arrives).
    """
    out: dict[str, Entry] = {}
    for path, stat in listing.items():
        if stat.kind == LINK:
            out[path] = Entry(LINK, "", 0, stat.target)
            continue
        known = base.get(path)
        sha = hashes.get(path)
        if sha is None:
            unmoved = known is not None and getattr(known, side) == (stat.size, stat.mtime_ns)
            sha = known.entry.sha256 if unmoved and known is not None else f"?{stat.mtime_ns}"
        out[path] = Entry(FILE, sha, stat.mode, "", stat.size)
    return out


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Conflict:
    path: str
    host: str  # "changed", "created" or "deleted" since the last sync
    engine: str
    copy: str  # where the engine's copy lands on the host; "" when the engine deleted it

    def message(self) -> str:
        kept = "kept yours" if self.host != "deleted" else "it stays deleted here"
        theirs = (
            f"the engine's copy is {self.copy}"
            if self.copy
            else "the engine deleted it, and gets yours back"
        )
        fix = (
            f"compare them, keep what you want under {self.path} and delete {self.copy}"
            if self.copy
            else "nothing to do unless you meant to delete it: then delete it here"
        )
        return (
            f"conflict: {self.path} was {self.host} here and {self.engine} on the engine since "
            f"the last sync: {kept}; {theirs} ({fix}; the next enter sends your version)"
        )


@dataclass(frozen=True)
class SyncPlan:
    push: tuple[str, ...] = ()  # host -> volume
    remove_remote: tuple[str, ...] = ()
    pull: tuple[tuple[str, str], ...] = ()  # (path in the volume, where on the host)
    remove_local: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    held: tuple[str, ...] = ()  # not synced this time; their base stays as it was
    clashes: tuple[str, ...] = ()  # a file or link here, a folder on the engine: left alone

    @property
    def empty(self) -> bool:
        return not (self.push or self.remove_remote or self.pull or self.remove_local)


def conflict_copy(relpath: str) -> str:
    return relpath + CONFLICT_SUFFIX


def _change(before: Entry | None, now: Entry | None) -> str:
    if now is None:
        return "deleted"
    return "created" if before is None else "changed"


def plan(
    base: Base,
    host: Mapping[str, Entry],
    engine: Mapping[str, Entry] | None = None,
    *,
    complete: bool = True,
    held: Iterable[str] = (),
) -> SyncPlan:
    """The transfers that bring host and volume to the same content; engine None: the volume
    is known to hold exactly the base (nothing ran since the last sync).

    complete False: the engine's listing may leave paths out, so a path missing from it is
    held (neither deleted here nor sent there) instead of counted as deleted on the engine.
    held: paths not to touch this time (over the size bound on one side, say)."""
    listed = engine is not None
    if engine is None:
        engine = {p: s.entry for p, s in base.items()}
    hold = set(held)
    if not complete:
        hold |= (set(base) | set(host)) - set(engine)
    folders = _folders(engine) if listed else set()
    push: list[str] = []
    remove_remote: list[str] = []
    pull: list[tuple[str, str]] = []
    remove_local: list[str] = []
    conflicts: list[Conflict] = []
    clashes: list[str] = []
    for path in sorted(set(base) | set(host) | set(engine)):
        if path in hold:
            continue
        s = base[path].entry if path in base else None
        h, e = host.get(path), engine.get(path)
        host_moved = not (h.same(s) if h is not None else s is None)
        engine_moved = not (e.same(s) if e is not None else s is None)
        if not host_moved and not engine_moved:
            continue
        if host_moved and h is not None and e is None and path in folders:
            clashes.append(path)  # sending it would replace the engine's folder and its files
            continue
        if host_moved and engine_moved:
            if (h is None and e is None) or (h is not None and h.same(e)):
                continue  # both sides did the same
            copy = conflict_copy(path) if e is not None else ""
            conflicts.append(Conflict(path, _change(s, h), _change(s, e), copy))
            if e is not None:
                pull.append((path, copy))
            if h is not None:
                push.append(path)
            else:
                remove_remote.append(path)
        elif host_moved:
            (push.append(path) if h is not None else remove_remote.append(path))
        elif e is not None:
            pull.append((path, path))
        else:
            remove_local.append(path)
    return SyncPlan(
        tuple(push),
        tuple(remove_remote),
        tuple(pull),
        tuple(remove_local),
        tuple(conflicts),
        tuple(sorted(hold & (set(base) | set(host) | set(engine)))),
        tuple(clashes),
    )


def _folders(paths: Iterable[str]) -> set[str]:
    """Every folder above the paths."""
    out: set[str] = set()
    for path in paths:
        parent = posixpath.dirname(path)
        while parent and parent not in out:
            out.add(parent)
            parent = posixpath.dirname(parent)
    return out


def after(
    base: Base,
    host: Mapping[str, Entry],
    host_stats: Mapping[str, Stat],
    engine_stats: Mapping[str, Stat] | None,
    done: SyncPlan,
    pushed_engine: Mapping[str, tuple[int, int]],
    pulled: Mapping[str, tuple[Entry, tuple[int, int], tuple[int, int]]],
) -> dict[str, Synced]:
    """The new base once `done` is applied: both sides hold the host's content, except where
    a pull wrote the engine's (its content and the host stat after writing are in `pulled`).

    pushed_engine: the volume's (size, mtime_ns) of each pushed file, as envd wrote it.
    """
    out: dict[str, Synced] = {}
    for path, entry in host.items():
        hs = host_stats.get(path)
        host_seen = (hs.size, hs.mtime_ns) if hs is not None else (-1, -1)
        if path in pushed_engine:
            out[path] = Synced(entry, host_seen, pushed_engine[path])
            continue
        es = engine_stats.get(path) if engine_stats is not None else None
        known = base.get(path)
        if es is not None:
            engine_seen = (es.size, es.mtime_ns)
        else:  # not listed this time: the volume holds it as the base saw it
            engine_seen = known.engine if known is not None else (-1, -1)
        out[path] = Synced(entry, host_seen, engine_seen)
    for path, (entry, host_seen, engine_seen) in pulled.items():
        out[path] = Synced(entry, host_seen, engine_seen)
    for path in done.remove_local:
        out.pop(path, None)
    for c in done.conflicts:
        out.pop(c.copy, None)  # copies are the user's to resolve; they never move
    for path in (*done.held, *done.clashes):  # untouched: as the last sync left it
        if path in base:
            out[path] = base[path]
        else:
            out.pop(path, None)
    return out


# ---------------------------------------------------------------- the engine's listing


FIND_FIELDS = 6  # %y %s %T@ %m %P %l, each ended by NUL


def find_script(workdir: str) -> str:
    """One `find` in the container that lists every file and link with its stat data."""
    prune = " -o ".join(f"-name {n}" for n in sorted(IGNORED_NAMES))
    return (
        f"cd {workdir} && find . -xdev \\( {prune} \\) -prune -o "
        "\\( -type f -o -type l \\) -printf '%y\\0%s\\0%T@\\0%m\\0%P\\0%l\\0' 2>/dev/null"
    )


def mtime_ns(text: str) -> int:
    """find's %T@ ("1733071234.1234567890") as integer nanoseconds, exactly."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


def parse_find(output: bytes, status: int = 0) -> Listing:
    """The files and links of find_script's output (find's exit status: not 0, some were left
    out, and the listing is not complete; so is one with a malformed record). Ignored names
    are left out, and so are names `safenames.relative` refuses (in `refused`: the host's
    scan leaves them out too, so they never count as deleted on either side)."""
    fields = output.split(b"\0")
    out: dict[str, Stat] = {}
    problems: list[str] = []
    if status != 0:
        problems.append(f"find ended with status {status}")
    if len(fields) % FIND_FIELDS != 1 or fields[-1]:
        problems.append("the listing ends part way through a record")
    refused: list[str] = []
    malformed = 0
    for i in range(0, len(fields) - FIND_FIELDS + 1, FIND_FIELDS):
        kind, size, mtime, mode, path, target = fields[i : i + FIND_FIELDS]
        rel = path.decode("utf-8", "surrogateescape")
        if not rel or ignored_name(rel):
            continue
        k = FILE if kind == b"f" else LINK if kind == b"l" else ""
        if not k:
            continue
        try:
            name = relative(rel, "the engine's listing").as_posix()
        except UnsafeName:
            refused.append(rel)
            continue
        if name != rel:
            refused.append(rel)
            continue
        try:
            out[rel] = Stat(
                k,
                int(size),
                mtime_ns(mtime.decode()),
                int(mode, 8),
                target.decode("utf-8", "surrogateescape") if k == LINK else "",
            )
        except ValueError:  # (UnicodeDecodeError too)
            malformed += 1
    if malformed:
        problems.append(f"{malformed} malformed records")
    return Listing(out, not problems, "; ".join(problems), tuple(refused))


def parse_sha256sum(output: str, paths: list[str]) -> dict[str, str]:
    """`sha256sum -- PATHS` output, in the order asked; lines it escaped are left unhashed."""
    out: dict[str, str] = {}
    lines = output.splitlines()
    if len(lines) != len(paths):
        return out
    for path, line in zip(paths, lines, strict=True):
        digest = line[:64]
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            out[path] = digest
    return out


# ---------------------------------------------------------------- fetching in few calls


def fetch_groups(
    wanted: Iterable[str], listing: Mapping[str, Stat], slack: int = 1 << 20
) -> list[tuple[str, frozenset[str]]]:
    """(folder or file to archive, the wanted paths in it): one archive of a folder when it
    holds several wanted files and little else, else one per file."""
    by_parent: dict[str, list[str]] = {}
    for path in sorted(set(wanted)):
        by_parent.setdefault(posixpath.dirname(path), []).append(path)
    groups: list[tuple[str, frozenset[str]]] = []
    for parent, paths in sorted(by_parent.items()):
        if parent and len(paths) > 1:
            prefix = parent + "/"
            total = sum(s.size for p, s in listing.items() if p.startswith(prefix))
            want = sum(listing[p].size for p in paths if p in listing)
            if total <= 2 * want + slack:
                groups.append((parent, frozenset(paths)))
                continue
        groups.extend((p, frozenset({p})) for p in paths)
    return groups


# ---------------------------------------------------------------- the state file


def state_to_json(state: SyncState) -> dict[str, object]:
    return {
        "version": STATE_VERSION,
        "volume": state.volume,
        "volume_id": state.volume_id,
        "engine": state.engine,
        "files": {path: _row(s) for path, s in sorted(state.files.items())},
    }


def _row(s: Synced) -> list[object]:
    e = s.entry
    return [e.kind, e.sha256, e.mode, e.target, e.size, *s.host, *s.engine]


def state_from_json(data: object) -> SyncState:
    """A stored state; anything unreadable is the empty state (a full comparison follows)."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return SyncState()
    try:
        files = {
            str(path): Synced(
                Entry(str(v[0]), str(v[1]), int(v[2]), str(v[3]), int(v[4])),
                (int(v[5]), int(v[6])),
                (int(v[7]), int(v[8])),
            )
            for path, v in dict(data.get("files") or {}).items()
        }
        return SyncState(
            volume=str(data.get("volume", "")),
            volume_id=str(data.get("volume_id", "")),
            engine=str(data.get("engine", "")),
            files=files,
        )
    except (TypeError, ValueError, IndexError):
        return SyncState()
