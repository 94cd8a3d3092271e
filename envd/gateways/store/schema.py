"""The database's schema: the first release's tables, and each later version as one migration
applied in place, in order, at open (`Database._migrate`)."""

from __future__ import annotations

# PRAGMA user_version of the database. 1: the first release (the `SCHEMA_V1` tables);
# each later version is one entry of `MIGRATIONS`, applied in place, in order, at open.
SCHEMA_VERSION = 4  # 2: state_changed_at, migrations; 3: run details; 4: run workdir

# The first release's schema, kept as it was: a database of any version starts from it.
SCHEMA_V1 = """
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


# version -> the statements that take a database from version-1 to version.
MIGRATIONS: dict[int, str] = {
    2: """
ALTER TABLE projects ADD COLUMN state_changed_at REAL NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS migrations (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL,
    envd_version TEXT NOT NULL
);
""",
}

MIGRATIONS[3] = _RUN_DETAILS_SCHEMA  # what a run read and made (envd.yaml `runs:`)
# where in the project a run ran (project-relative, "" for its root), for `envctl rerun`
MIGRATIONS[4] = "ALTER TABLE runs ADD COLUMN workdir TEXT NOT NULL DEFAULT ''"
