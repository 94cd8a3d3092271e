"""The database file and its connection: opened private, migrated, one writer at a time
(SQLite in WAL mode lets readers proceed); every failure of the file said in words.
The key/value cache lives here too: it is no table's."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from envd import __version__
from envd.errors import DaemonUnavailable, StateError
from envd.gateways.store.schema import MIGRATIONS, SCHEMA_V1, SCHEMA_VERSION
from envd.paths import FILE_MODE, unusable_path

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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


class Database:
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
            self._db.executescript(SCHEMA_V1)  # idempotent: every statement is IF NOT EXISTS
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
        statements = [s.strip() for s in MIGRATIONS[version].split(";") if s.strip()]
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

    # ------------------------------------------------------------ key/value cache

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM kv WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def put(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

    def delete(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM kv WHERE key=?", (key,))
