"""The store keeps its state across releases and says why it cannot write, never crashes."""

from __future__ import annotations

import errno
import sqlite3
import stat
from pathlib import Path

import pytest

from envd.errors import EXIT_DAEMON, DaemonUnavailable, StateError
from envd.gateways.store import INTERRUPTED_BUILD, SCHEMA_VERSION, Store, state_error
from envd.model.state import ProjectState

# The previous release's schema, as `git show f388d29:envd/store.py` has it (user_version 1).
PREVIOUS_SCHEMA = """
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
    document TEXT NOT NULL,          -- the fingerprint file format (envd.fingerprint.dumps)
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


def previous_release_db(path: Path) -> None:
    """A database as the previous release left it, with a few rows."""
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(PREVIOUS_SCHEMA + "PRAGMA user_version=1;")
    db.execute(
        "INSERT INTO projects VALUES ('churn', '/src/churn', 1.5, 'ready', '', "
        "'envd/churn:0123456789ab', 'lockhash')"
    )
    db.execute("INSERT INTO projects (name, path, added_at) VALUES ('fresh', '/src/fresh', 2.0)")
    db.execute(
        "INSERT INTO images VALUES ('envd/churn:0123456789ab', 'sha256:aa', 'churn', 'project', "
        "'key1', 'lockhash', 123, 10.0, 11.0)"
    )
    db.execute("INSERT INTO steps VALUES ('key1', '', 'venv', 'sha256:bb', 7, 1.0, 2.0)")
    db.execute("INSERT INTO fingerprints VALUES ('sha256:aa', '{}', 'envhash', 3.0)")
    db.execute(
        "INSERT INTO runs (id, project, command, started_at, finished, exit_code) "
        "VALUES ('run1', 'churn', '[\"python\", \"train.py\"]', 5.0, 1, 2)"
    )
    db.execute("INSERT INTO kv VALUES ('target:abc', 'cached')")
    db.commit()
    db.close()


def columns(path: Path, table: str) -> set[str]:
    db = sqlite3.connect(str(path))
    try:
        return {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})")}
    finally:
        db.close()


def test_a_previous_release_database_is_migrated_in_place_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "envd.db"
    previous_release_db(path)
    assert "state_changed_at" not in columns(path, "projects")

    store = Store(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        churn = store.project_by_name("churn")
        assert churn is not None
        assert (churn.path, churn.state, churn.image, churn.lock_hash) == (
            "/src/churn",
            ProjectState.READY,
            "envd/churn:0123456789ab",
            "lockhash",
        )
        assert [p.name for p in store.projects()] == ["churn", "fresh"]
        image = store.image("envd/churn:0123456789ab")
        assert image is not None and (image.image_id, image.size_bytes) == ("sha256:aa", 123)
        assert store.steps() == [("key1", "venv", "sha256:bb", 7, 2.0)]
        assert store.environment_hash("sha256:aa") == "envhash"
        run = store.run("run1")
        assert run is not None
        assert (run.command, run.exit_code, run.finished) == (("python", "train.py"), 2, True)
        assert run.workdir == ""  # step 4: a run from before ran at the project's root
        assert store.get("target:abc") == "cached"
        assert [m[0] for m in store.migrations()] == [2, 3, 4]
        tables = {
            r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"run_details", "run_outputs"} <= tables  # step 3: what runs read and made
        # the new column is used: a state change records when it happened
        store.set_project_state("fresh", ProjectState.STALE, "moved on")
    finally:
        store.close()
    assert "state_changed_at" in columns(path, "projects")
    db = sqlite3.connect(str(path))
    changed = db.execute("SELECT state_changed_at FROM projects WHERE name='fresh'").fetchone()[0]
    untouched = db.execute("SELECT state_changed_at FROM projects WHERE name='churn'").fetchone()
    db.close()
    assert changed > 0 and untouched[0] == 0
    # the database as it was before the migration is kept beside it
    backup = tmp_path / "envd.db.schema1.bak"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert "state_changed_at" not in columns(backup, "projects")


def test_reopening_a_migrated_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "envd.db"
    previous_release_db(path)
    Store(path).close()
    store = Store(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert len(store.migrations()) == 3  # one row per step applied (2, 3, 4)
        assert len(store.projects()) == 2
    finally:
        store.close()


def test_an_unversioned_database_with_tables_is_migrated_too(tmp_path: Path) -> None:
    """user_version 0 but the tables there (written before versions were kept)."""
    path = tmp_path / "envd.db"
    previous_release_db(path)
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA user_version=0")
    db.close()
    store = Store(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert [p.name for p in store.projects()] == ["churn", "fresh"]
    finally:
        store.close()
    assert (tmp_path / "envd.db.schema0.bak").exists()


def test_a_new_database_starts_at_the_current_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "envd.db")
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert not (tmp_path / "envd.db.schema0.bak").exists()
    finally:
        store.close()
    assert "state_changed_at" in columns(tmp_path / "envd.db", "projects")


def test_a_database_from_a_newer_envd_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "envd.db"
    db = sqlite3.connect(str(path))
    db.executescript(PREVIOUS_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION + 1};")
    db.close()
    with pytest.raises(StateError, match="newer envd") as caught:
        Store(path)
    assert caught.value.exit_code == EXIT_DAEMON
    assert "state_changed_at" not in columns(path, "projects")


def test_builds_cut_short_by_a_dead_daemon_become_stale(tmp_path: Path) -> None:
    store = Store(tmp_path / "envd.db")
    try:
        for name in ("a", "b", "c"):
            store.add_project(name, f"/src/{name}")
        store.set_project_state("a", ProjectState.BUILDING)
        store.set_project_state("b", ProjectState.READY)
        store.set_project_state("c", ProjectState.BUILDING)
        assert store.reset_interrupted_builds() == ["a", "c"]
        states = {p.name: (p.state, p.state_reason) for p in store.projects()}
        assert states == {
            "a": (ProjectState.STALE, INTERRUPTED_BUILD),
            "b": (ProjectState.READY, ""),
            "c": (ProjectState.STALE, INTERRUPTED_BUILD),
        }
        assert INTERRUPTED_BUILD == "the daemon stopped during its build"
        assert store.reset_interrupted_builds() == []
    finally:
        store.close()


def test_database_files_are_private_and_an_old_loose_one_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "envd.db"
    previous_release_db(path)  # sqlite3 made it 0644 (umask 022)
    path.chmod(0o644)
    store = Store(path)
    try:
        store.add_project("x", "/src/x")  # the WAL is written
        for name in ("envd.db", "envd.db-wal", "envd.db-shm"):
            mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
            assert mode == 0o600, (name, oct(mode))
    finally:
        store.close()


def test_a_damaged_database_is_a_state_error_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "envd.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="damaged") as caught:
        Store(path)
    assert "mv " in (caught.value.hint or "")


def test_a_folder_where_the_database_must_be_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "envd.db").mkdir()
    with pytest.raises(StateError) as caught:
        Store(tmp_path / "envd.db")
    assert caught.value.exit_code == EXIT_DAEMON


def test_sqlite_full_and_read_only_are_said_in_words(tmp_path: Path) -> None:
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    err = state_error(full, tmp_path / "envd.db")
    assert "no space left" in err.message and "df -h" in (err.hint or "")
    readonly = sqlite3.OperationalError("attempt to write a readonly database")
    readonly.sqlite_errorname = "SQLITE_READONLY"  # type: ignore[attr-defined]
    assert "cannot be written" in state_error(readonly, tmp_path / "envd.db").message
    rofs = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "envd.db"))
    assert "read-only file system" in state_error(rofs, tmp_path / "envd.db").message


def test_a_write_on_a_database_gone_read_only_is_a_state_error(tmp_path: Path) -> None:
    """SQLite's own refusal to write (SQLITE_READONLY) is a StateError, not an internal error."""
    path = tmp_path / "envd.db"
    Store(path).close()
    store = Store(path)
    try:
        store._db.close()
        store._db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
        )
        with pytest.raises(StateError, match="cannot be written"):
            store.add_project("y", "/src/y")
        assert store.projects() == []  # reading still works
    finally:
        store.close()


def test_a_store_closed_under_a_running_command_says_the_daemon_stopped(tmp_path: Path) -> None:
    """`envctl daemon stop` while a build is still recording its steps: exit 11, not a bug."""
    store = Store(tmp_path / "state.db")
    store.close()
    with pytest.raises(DaemonUnavailable) as caught:
        store.projects()
    assert caught.value.exit_code == EXIT_DAEMON
    assert "stopped while this command ran" in caught.value.message
