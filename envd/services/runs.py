"""Run records: every `envctl enter P -- CMD`, its exit status and what it ran on."""

from __future__ import annotations

from envd.errors import NotFound
from envd.gateways.store import RunRow, Store


class Runs:
    def __init__(self, store: Store) -> None:
        self._store = store

    def start(self, run: RunRow) -> None:
        self._store.start_run(run)

    def set_provenance(
        self, run_id: str, environment_hash: str, host_hash: str, commit: str, dirty: bool
    ) -> None:
        self._store.set_run_provenance(run_id, environment_hash, host_hash, commit, dirty)

    def finish(self, run_id: str, exit_code: int) -> RunRow:
        run = self._store.finish_run(run_id, exit_code)
        if run is None:
            raise NotFound(f"no run {run_id}", hint="`envctl runs` lists them")
        return run

    def get(self, run_id: str) -> RunRow:
        run = self._store.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}", hint="`envctl runs` lists them")
        return run

    def list(self, project: str = "", limit: int = 50) -> list[RunRow]:
        return self._store.runs(project, limit)
