"""The projects table: registered projects, their state and their current image."""

from __future__ import annotations

import time

from envd.gateways.store.database import Database
from envd.gateways.store.rows import INTERRUPTED_BUILD, ProjectRow, project_row
from envd.model.state import ProjectState


class ProjectsMixin(Database):
    _PROJECT_COLUMNS = "name, path, added_at, state, state_reason, image, lock_hash"

    def projects(self) -> list[ProjectRow]:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects ORDER BY name")
        return [project_row(r) for r in rows]

    def project_by_name(self, name: str) -> ProjectRow | None:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects WHERE name=?", (name,))
        return project_row(rows[0]) if rows else None

    def project_by_path(self, path: str) -> ProjectRow | None:
        rows = self._query(f"SELECT {self._PROJECT_COLUMNS} FROM projects WHERE path=?", (path,))
        return project_row(rows[0]) if rows else None

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
