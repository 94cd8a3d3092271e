"""The runs tables: each run, what it ran on, and its details (what it read and made)."""

from __future__ import annotations

import json
import time

from envd.gateways.store.database import Database
from envd.gateways.store.rows import MAX_RUN_ID, RunDetailsRow, RunRow, details_row, run_row


class RunsMixin(Database):
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
            return run_row(exact[0])
        return run_row(rows[0]) if len(rows) == 1 else None

    def runs(self, project: str = "", limit: int = 50) -> list[RunRow]:
        where, params = ("WHERE project=?", (project,)) if project else ("", ())
        rows = self._query(
            f"SELECT {self._RUN_COLUMNS} FROM runs {where} ORDER BY started_at DESC LIMIT ?",
            (*params, limit),
        )
        return [run_row(r) for r in rows]

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
        return details_row(rows[0]) if rows else None

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
