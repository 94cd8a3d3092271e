"""The daemon's state: one SQLite database (WAL) under $ENVD_HOME.

All access goes through Store, which serialises writers with one lock; SQLite in WAL mode lets
readers proceed. Rows are returned as small frozen dataclasses, never as sqlite3.Row.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from envd import __version__
from envd.errors import DaemonUnavailable, StateError
from envd.model.state import ProjectState
from envd.paths import FILE_MODE, unusable_path

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# PRAGMA user_version of the database. 1: the first release (the `_SCHEMA_V1` tables);
# each later version is one entry of `_MIGRATIONS`, applied in place, in order, at open.
SCHEMA_VERSION = 4  # 2: state_changed_at, migrations; 3: run details; 4: run workdir

# The first release's schema, kept as it was: a database of any version starts from it.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'new',
    state_reason TEXT NOT NULL DEFAULT '',
    image TEXT NOT NULL DEFAULT '',
    lock_hash TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS images (
    image TEXT PRIMARY KEY,          -- tag, e.g. envd/churn:0123456789ab
    image_id TEXT NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,              -- project | step | base
    cache_key TEXT NOT NULL DEFAULT '',
    lock_hash TEXT NOT NULL DEFAULT '',
    size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    cache_key TEXT PRIMARY KEY,
    parent_key TEXT NOT NULL,
    name TEXT NOT NULL,
    image_id TEXT NOT NULL,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fingerprints (
    image_id TEXT PRIMARY KEY,
    document TEXT NOT NULL,          -- the fingerprint file format (envd.model.fingerprint.dumps)
    environment_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    command TEXT NOT NULL,           -- a JSON list of argv strings
    image TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    environment_hash TEXT NOT NULL DEFAULT '',
    host_hash TEXT NOT NULL DEFAULT '',
    git_commit TEXT NOT NULL DEFAULT '',
    git_dirty INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project, started_at);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Migration step "run details" (envd.yaml `runs:`): one row per recorded run with what it read
# and made, and one row per output file for `trace` (by sha256). Only new tables, so applying
# it to an older database is adding them; nothing existing changes.
_RUN_DETAILS_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_details (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done
    params TEXT NOT NULL DEFAULT '{}',       -- JSON {file: text}
    data TEXT NOT NULL DEFAULT '{}',         -- JSON {path: sha256}
    outputs TEXT NOT NULL DEFAULT '{}',      -- JSON {path: sha256}
    metrics TEXT NOT NULL DEFAULT '{}',      -- JSON {name: number}
    notes TEXT NOT NULL DEFAULT '[]',        -- JSON [text]
    lock_sha256 TEXT NOT NULL DEFAULT '',
    diff_sha256 TEXT NOT NULL DEFAULT '',
    diff TEXT NOT NULL DEFAULT '',           -- the uncommitted diff itself (bounded)
    image_id TEXT NOT NULL DEFAULT '',
    imported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS run_outputs (
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (sha256, run_id, path)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class RunDetailsRow:
    run_id: str
    state: str
    params: dict[str, str]
    data: dict[str, str]
    outputs: dict[str, str]
    metrics: dict[str, float]
    notes: tuple[str, ...]
    lock_sha256: str
    diff_sha256: str
    diff: str
    imported: bool
    image_id: str = ""


# version -> the statements that take a database from version-1 to version.
_MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE projects ADD COLUMN state_changed_at REAL NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS migrations (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL,
    envd_version TEXT NOT NULL
);
""",
}

_MIGRATIONS[3] = _RUN_DETAILS_SCHEMA  # what a run read and made (envd.yaml `runs:`)
# where in the project a run ran (project-relative, "" for its root), for `envctl rerun`
_MIGRATIONS[4] = "ALTER TABLE runs ADD COLUMN workdir TEXT NOT NULL DEFAULT ''"

INTERRUPTED_BUILD = "the daemon stopped during its build"
MAX_RUN_ID = 128  # longer ids are no run's (envd's are 12 hex digits; imported ones are bounded)


@dataclass(frozen=True)
class ImageRow:
    image: str
    image_id: str
    project: str
    kind: str
    cache_key: str
    lock_hash: str
    size_bytes: int
    created_at: float
    last_used_at: float


@dataclass(frozen=True)
class RunRow:
    id: str
    project: str
    command: tuple[str, ...]
    image: str
    started_at: float
    ended_at: float
    exit_code: int
    finished: bool
    environment_hash: str
    host_hash: str
    git_commit: str
    git_dirty: bool
    workdir: str = ""  # where in the project it ran: a relative POSIX path, "" for the root


@dataclass(frozen=True)
class ProjectRow:
    name: str
    path: str
    added_at: float
    state: ProjectState
    state_reason: str
    image: str
    lock_hash: str


def state_error(exc: BaseException, path: Path) -> StateError:
    """A failure to read or write envd's database, said in words, with a fix."""
    home = path.parent
    if isinstance(exc, OSError):
        return unusable_path(path, exc, home)
    name = str(getattr(exc, "sqlite_errorname", ""))
    if name == "SQLITE_FULL":
        return unusable_path(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), home)
    if name.startswith("SQLITE_READONLY"):
        return StateError(
            f"envd's database {path} cannot be written ({exc})",
            hint=f"make {home} and the files in it writable by you (`chmod -R u+rwX {home}`), "
            "or remount it read-write, or point ENVD_HOME at a writable folder of your own",
        )
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StateError(
            f"{path} is damaged: {exc}",
            hint=f"stop envd and move it aside (`mv {path} {path}.broken`); envd then starts "
            "with an empty state and projects are registered again on first use",
        )
    return StateError(
        f"cannot use envd's database {path}: {exc}",
        hint=f"check the file system and the permissions of {home}",
    )


def is_state_failure(exc: BaseException) -> bool:
    """The file system or the database file failed (full, read-only, damaged), not a query."""
    return isinstance(exc, OSError | sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _make_private(path: Path) -> None:
    """Create the database file 0600 (so SQLite's -wal and -shm are too); tighten an old one."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        try:
            if side.stat().st_mode & 0o077:
                side.chmod(FILE_MODE)
        except FileNotFoundError:
            pass


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._closed = False  # set by close(): a later call is "the daemon stopped"
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _make_private(path)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise state_error(exc, path) from exc
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise state_error(exc, path) from exc
        except BaseException:
            self._db.close()
            raise

    # ------------------------------------------------------------ schema

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        """Bring the database to SCHEMA_VERSION in place; each step commits with its version."""
        with self._lock:
            found = self.schema_version()
            if found > SCHEMA_VERSION:
                raise StateError(
                    f"{self.path} was written by a newer envd (schema {found}; this envd "
                    f"{__version__} knows schema {SCHEMA_VERSION} and older)",
                    hint="upgrade envd to the version that wrote it",
                )
            if found < SCHEMA_VERSION and self._has_tables():
                self._backup(found)
            self._db.executescript(_SCHEMA_V1)  # idempotent: every statement is IF NOT EXISTS
            for version in range(max(found, 1) + 1, SCHEMA_VERSION + 1):
                self._apply(version)

    def _has_tables(self) -> bool:
        return bool(self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table'").fetchone())

    def _backup(self, version: int) -> None:
        """A copy of the database as it was, before a migration changes it."""
        target = self.path.with_name(f"{self.path.name}.schema{version}.bak")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.close(fd)
        copy = sqlite3.connect(str(target))
        try:
            self._db.backup(copy)
        finally:
            copy.close()
        log.info(
            "migrating %s from schema %d; the old one is kept in %s", self.path, version, target
        )

    def _apply(self, version: int) -> None:
        statements = [s.strip() for s in _MIGRATIONS[version].split(";") if s.strip()]
        self._db.execute("BEGIN IMMEDIATE")
        if self.schema_version() >= version:  # another process migrated it meanwhile
            self._db.execute("COMMIT")
            return
        try:
            for statement in statements:
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR REPLACE INTO migrations (version, applied_at, envd_version) "
                "VALUES (?, ?, ?)",
                (version, time.time(), __version__),
            )
            self._db.execute(f"PRAGMA user_version={version}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def migrations(self) -> list[tuple[int, float, str]]:
        """(version, applied_at, envd version) of every migration this database went through."""
        rows = self._query("SELECT version, applied_at, envd_version FROM migrations ORDER BY 1")
        return [(int(v), float(t), str(e)) for v, t, e in rows]  # type: ignore[call-overload, arg-type]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def _guard(self, work: Callable[[], _T]) -> _T:
        try:
            return work()
        except (OSError, sqlite3.DatabaseError) as exc:
            if isinstance(exc, sqlite3.ProgrammingError) and self._closed:
                # `envctl daemon stop` while a build still ran: say so, not "a bug"
                raise DaemonUnavailable(
                    "the envd daemon stopped while this command ran",
                    hint="run the command again: the next envctl command starts the daemon",
                ) from exc
            if not is_state_failure(exc):
                raise
            raise state_error(exc, self.path) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._guard(lambda: self._db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._db
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite may have rolled back already (a full disk does that)
                if is_state_failure(exc):
                    raise state_error(exc, self.path) from exc
                raise
            self._guard(lambda: self._db.execute("COMMIT"))

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._guard(lambda: list(self._db.execute(sql, params).fetchall()))

    # ------------------------------------------------------------ projects

    _PROJECT_COLUMNS = "name, path, added_at, state, state_reason, image, lock_hash"

    def projects(self) -> list[ProjectRow]:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects ORDER BY name")
        return [_project(r) for r in rows]

    def project_by_name(self, name: str) -> ProjectRow | None:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects WHERE name=?", (name,))
        return _project(rows[0]) if rows else None

    def project_by_path(self, path: str) -> ProjectRow | None:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects WHERE path=?", (path,))
        return _project(rows[0]) if rows else None

    def add_project(self, name: str, path: str) -> ProjectRow:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO projects (name, path, added_at) VALUES (?, ?, ?)",
                (name, path, time.time()),
            )
        row = self.project_by_name(name)
        assert row is not None
        return row

    def rename_project(self, old: str, new: str) -> None:
        """Rename a project; its image records and runs follow the name, in one transaction."""
        with self._transaction() as db:
            db.execute("UPDATE projects SET name=? WHERE name=?", (new, old))
            db.execute("UPDATE images SET project=? WHERE project=?", (new, old))
            db.execute("UPDATE runs SET project=? WHERE project=?", (new, old))

    def remove_project(self, name: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM projects WHERE name=?", (name,))

    def set_project_state(self, name: str, state: ProjectState, reason: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE projects SET state=?, state_reason=?, state_changed_at=? WHERE name=?",
                (state, reason, time.time(), name),
            )

    def reset_interrupted_builds(self, reason: str = INTERRUPTED_BUILD) -> list[str]:
        """Projects left `building` by a daemon that died mid-build become stale (at start,
        before anything can build); returns their names."""
        with self._transaction() as db:
            names = [
                str(r[0])
                for r in db.execute(
                    "SELECT name FROM projects WHERE state=? ORDER BY name",
                    (ProjectState.BUILDING.value,),
                ).fetchall()
            ]
            db.execute(
                "UPDATE projects SET state=?, state_reason=?, state_changed_at=? WHERE state=?",
                (ProjectState.STALE.value, reason, time.time(), ProjectState.BUILDING.value),
            )
        return names

    def set_project_image(self, name: str, image: str, lock_hash: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE projects SET image=?, lock_hash=? WHERE name=?", (image, lock_hash, name)
            )

    # ------------------------------------------------------------ build steps and images

    def step_image(self, cache_key: str) -> str | None:
        rows = self._query("SELECT image_id FROM steps WHERE cache_key=?", (cache_key,))
        return str(rows[0][0]) if rows else None

    def record_step(self, cache_key: str, parent: str, name: str, image_id: str, size: int) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cache_key, parent, name, image_id, size, now, now),
            )

    def touch_steps(self, keys: list[str]) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE steps SET last_used_at=? WHERE cache_key=?",
                [(time.time(), k) for k in keys],
            )

    def drop_step(self, cache_key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM steps WHERE cache_key=?", (cache_key,))

    def steps(self) -> list[tuple[str, str, str, int, float]]:
        """(cache_key, name, image_id, size_bytes, last_used_at) of every recorded step."""
        rows = self._query("SELECT cache_key, name, image_id, size_bytes, last_used_at FROM steps")
        return [(str(k), str(n), str(i), int(s), float(t)) for k, n, i, s, t in rows]  # type: ignore[call-overload, arg-type]

    _IMAGE_COLUMNS = (
        "image, image_id, project, kind, cache_key, lock_hash, size_bytes, created_at, last_used_at"
    )

    def record_image(
        self,
        image: str,
        image_id: str,
        project: str,
        kind: str,
        cache_key: str,
        lock_hash: str,
        size: int,
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO images ({self._IMAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image, image_id, project, kind, cache_key, lock_hash, size, now, now),
            )

    def image(self, image: str) -> ImageRow | None:
        rows = self._query(f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE image=?", (image,))
        return ImageRow(*rows[0]) if rows else None  # type: ignore[arg-type]

    def images(self) -> list[ImageRow]:
        rows = self._query(f"SELECT {self._IMAGE_COLUMNS} FROM images ORDER BY last_used_at")
        return [ImageRow(*r) for r in rows]  # type: ignore[arg-type]

    def touch_image(self, image: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE images SET last_used_at=? WHERE image=?", (time.time(), image))

    def drop_image(self, image: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM images WHERE image=?", (image,))

    # ------------------------------------------------------------ fingerprints

    def record_fingerprint(self, image_id: str, document: str, environment_hash: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
                (image_id, document, environment_hash, time.time()),
            )

    def fingerprint_document(self, image_id: str) -> str | None:
        rows = self._query("SELECT document FROM fingerprints WHERE image_id=?", (image_id,))
        return str(rows[0][0]) if rows else None

    def environment_hash(self, image_id: str) -> str:
        """The recorded environment hash of an image; "" when none is recorded."""
        rows = self._query(
            "SELECT environment_hash FROM fingerprints WHERE image_id=?", (image_id,)
        )
        return str(rows[0][0]) if rows else ""

    # ------------------------------------------------------------ runs

    _RUN_COLUMNS = (
        "id, project, command, image, started_at, ended_at, exit_code, finished, "
        "environment_hash, host_hash, git_commit, git_dirty, workdir"
    )

    def start_run(self, run: RunRow) -> None:
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO runs ({self._RUN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.id,
                    run.project,
                    json.dumps(list(run.command)),
                    run.image,
                    run.started_at,
                    run.ended_at,
                    run.exit_code,
                    int(run.finished),
                    run.environment_hash,
                    run.host_hash,
                    run.git_commit,
                    int(run.git_dirty),
                    run.workdir,
                ),
            )

    def finish_run(self, run_id: str, exit_code: int) -> RunRow | None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET ended_at=?, exit_code=?, finished=1 WHERE id=? AND finished=0",
                (time.time(), exit_code, run_id),
            )
        return self.run(run_id)

    def run(self, run_id: str) -> RunRow | None:
        """The run with this id, or the one run whose id starts with it (None if none or
        several). An id longer than any run's is no run: it never reaches SQLite's LIKE, and
        `%`, `_` and `\\` in it match themselves."""
        if not run_id or len(run_id) > MAX_RUN_ID:
            return None
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._query(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id=? OR id LIKE ? ESCAPE '\\' "
            "ORDER BY id=? DESC LIMIT 2",
            (run_id, f"{pattern}%", run_id),
        )
        exact = [r for r in rows if r[0] == run_id]
        if exact:
            return _run(exact[0])
        return _run(rows[0]) if len(rows) == 1 else None

    def runs(self, project: str = "", limit: int = 50) -> list[RunRow]:
        where, params = ("WHERE project=?", (project,)) if project else ("", ())
        rows = self._query(
            f"SELECT {self._RUN_COLUMNS} FROM runs {where} ORDER BY started_at DESC LIMIT ?",
            (*params, limit),
        )
        return [_run(r) for r in rows]

    # ------------------------------------------------------------ key/value cache

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def set_run_provenance(
        self, run_id: str, environment_hash: str, host_hash: str, git_commit: str, git_dirty: bool
    ) -> None:
        """What a run ran on, filled in just after it starts (off the enter hot path)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET environment_hash=?, host_hash=?, git_commit=?, git_dirty=? "
                "WHERE id=?",
                (environment_hash, host_hash, git_commit, int(git_dirty), run_id),
            )

    # ------------------------------------------------------------ run details (migration step)

    _DETAIL_COLUMNS = (
        "run_id, state, params, data, outputs, metrics, notes, lock_sha256, diff_sha256, diff, "
        "imported, image_id"
    )

    def put_run_details(self, details: RunDetailsRow) -> None:
        """Insert or replace a run's details, and index its outputs by sha256."""
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO run_details ({self._DETAIL_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    details.run_id,
                    details.state,
                    json.dumps(details.params, sort_keys=True),
                    json.dumps(details.data, sort_keys=True),
                    json.dumps(details.outputs, sort_keys=True),
                    json.dumps(details.metrics, sort_keys=True),
                    json.dumps(list(details.notes)),
                    details.lock_sha256,
                    details.diff_sha256,
                    details.diff,
                    int(details.imported),
                    details.image_id,
                ),
            )
            db.execute("DELETE FROM run_outputs WHERE run_id=?", (details.run_id,))
            db.executemany(
                "INSERT OR IGNORE INTO run_outputs (sha256, path, run_id) VALUES (?, ?, ?)",
                [(digest, path, details.run_id) for path, digest in details.outputs.items()],
            )

    def run_details(self, run_id: str) -> RunDetailsRow | None:
        rows = self._query(
            f"SELECT {self._DETAIL_COLUMNS} FROM run_details WHERE run_id=?", (run_id,)
        )
        return _details(rows[0]) if rows else None

    def runs_with_output(self, sha256: str) -> list[str]:
        """Ids of the runs that wrote a file with these bytes."""
        rows = self._query("SELECT DISTINCT run_id FROM run_outputs WHERE sha256=?", (sha256,))
        return [str(r[0]) for r in rows]

    def runs_with_output_path(self, path: str) -> list[str]:
        rows = self._query("SELECT DISTINCT run_id FROM run_outputs WHERE path=?", (path,))
        return [str(r[0]) for r in rows]

    def insert_run(self, run: RunRow) -> bool:
        """Add a run made elsewhere (an import); False when this id is already recorded."""
        if self._query("SELECT 1 FROM runs WHERE id=?", (run.id,)):
            return False
        self.start_run(run)
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET ended_at=?, exit_code=?, finished=1 WHERE id=?",
                (run.ended_at, run.exit_code, run.id),
            )
        return True


def _details(row: tuple[object, ...]) -> RunDetailsRow:
    rid, state, params, data, outputs, metrics, notes, lock, diff_sha, diff, imported, image_id = (
        row
    )
    return RunDetailsRow(
        run_id=str(rid),
        state=str(state),
        params={str(k): str(v) for k, v in json.loads(str(params)).items()},
        data={str(k): str(v) for k, v in json.loads(str(data)).items()},
        outputs={str(k): str(v) for k, v in json.loads(str(outputs)).items()},
        metrics={str(k): float(v) for k, v in json.loads(str(metrics)).items()},
        notes=tuple(str(n) for n in json.loads(str(notes))),
        lock_sha256=str(lock),
        diff_sha256=str(diff_sha),
        diff=str(diff),
        imported=bool(imported),
        image_id=str(image_id),
    )


def _run(row: tuple[object, ...]) -> RunRow:
    (
        rid,
        project,
        command,
        image,
        started,
        ended,
        code,
        finished,
        env_hash,
        host_hash,
        commit,
        dirty,
        workdir,
    ) = row
    return RunRow(
        id=str(rid),
        project=str(project),
        command=tuple(json.loads(str(command))),
        image=str(image),
        started_at=float(started),  # type: ignore[arg-type]
        ended_at=float(ended),  # type: ignore[arg-type]
        exit_code=int(code),  # type: ignore[call-overload]
        finished=bool(finished),
        environment_hash=str(env_hash),
        host_hash=str(host_hash),
        git_commit=str(commit),
        git_dirty=bool(dirty),
        workdir=str(workdir),
    )


def _project(row: tuple[object, ...]) -> ProjectRow:
    name, path, added_at, state, reason, image, lock_hash = row
    return ProjectRow(
        name=str(name),
        path=str(path),
        added_at=float(added_at),  # type: ignore[arg-type]
        state=ProjectState.parse(str(state)),
        state_reason=str(reason),
        image=str(image),
        lock_hash=str(lock_hash),
    )
