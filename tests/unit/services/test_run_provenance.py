"""A run's provenance (hashes, commit, dirty) is filled in beside the command: Runs.finish
records the exit status without waiting for it, and every reader of the run waits (bounded)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from envd.gateways.store import RunRow, Store
from envd.services.runs import Runs

COMMIT = "c0ffee" * 6 + "abcd"


def row(run_id: str) -> RunRow:
    return RunRow(run_id, "p", ("true",), "img", time.time(), 0, 0, False, "", "", "", False)


class SlowFill:
    """A provenance fill (git status on a large repository) that ends when told to."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self) -> tuple[str, str, str, bool]:
        self.calls += 1
        assert self.release.wait(10), "never released"
        return "env-hash", "host-hash", COMMIT, True


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    return Runs(Store(tmp_path / "envd.db"))


def test_the_exit_status_is_recorded_before_the_provenance(runs: Runs) -> None:
    fill = SlowFill()
    runs.start(row("r1"), provenance=fill)
    runs.fill_provenance("r1")
    began = time.monotonic()
    finished = runs.finish("r1", 3)  # the fill still runs: finish does not wait for it
    assert time.monotonic() - began < 5
    assert finished.finished and finished.exit_code == 3 and finished.git_commit == ""
    threading.Timer(0.2, fill.release.set).start()
    got = runs.get("r1")  # a reader waits for it
    assert (got.git_commit, got.git_dirty, got.environment_hash, got.host_hash) == (
        COMMIT,
        True,
        "env-hash",
        "host-hash",
    )
    assert got.exit_code == 3 and fill.calls == 1


def test_the_fill_starts_only_when_asked(runs: Runs) -> None:
    fill = SlowFill()
    fill.release.set()
    runs.start(row("r2"), provenance=fill)
    time.sleep(0.05)
    assert fill.calls == 0  # (the caller starts it beside the command)
    runs.fill_provenance("r2")
    runs.fill_provenance("r2")  # once only
    runs.wait_provenance("r2")
    assert fill.calls == 1 and runs.get("r2").git_commit == COMMIT


def test_a_reader_starts_a_fill_nobody_started(runs: Runs) -> None:
    fill = SlowFill()
    fill.release.set()
    runs.start(row("r3"), provenance=fill)
    assert [r.git_commit for r in runs.list("p")] == [COMMIT]  # no wait for nothing
    assert fill.calls == 1


def test_list_and_records_wait_for_pending_provenance(runs: Runs) -> None:
    fill = SlowFill()
    runs.start(row("r4"), provenance=fill)
    runs.fill_provenance("r4")
    runs.finish("r4", 0)
    threading.Timer(0.2, fill.release.set).start()
    (record,) = runs.records("p")
    assert record.code.commit == COMMIT and record.code.dirty


def test_a_failing_fill_leaves_the_run_without_provenance(runs: Runs) -> None:
    def broken() -> tuple[str, str, str, bool]:
        raise RuntimeError("store closing")

    runs.start(row("r5"), provenance=broken)
    runs.fill_provenance("r5")
    runs.finish("r5", 1)
    got = runs.get("r5")
    assert got.exit_code == 1 and got.git_commit == "" and got.environment_hash == ""


def test_a_reader_waits_at_most_the_bound(runs: Runs) -> None:
    fill = SlowFill()
    runs.start(row("r6"), provenance=fill)
    runs.fill_provenance("r6")
    began = time.monotonic()
    runs.wait_provenance("r6", timeout=0.1)
    assert time.monotonic() - began < 2
    fill.release.set()
    runs.wait_provenance("r6")
    assert runs.get("r6").git_commit == COMMIT
