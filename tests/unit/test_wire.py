"""envd/wire.py: what the daemon sends is what the CLI reads back (fingerprints, runs, changes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from envd.model.fingerprint import (
    Change,
    EnvironmentSection,
    HostGpu,
    HostSection,
    Package,
    make_fingerprint,
)
from envd.model.runrecord import Change as RunChange
from envd.model.runrecord import CodeState, RunRecord
from envd.wire import (
    change_from_msg,
    change_msg,
    from_msg,
    record_from_msg,
    record_msg,
    run_change_from_msg,
    run_change_msg,
    to_msg,
)

A = "a" * 64
B = "b" * 64
COMMIT = "c" * 40

RUN = RunRecord(
    id="r1",
    project="proj",
    command=("python", "-m", "train", "--lr", "0.1"),
    started_at=1_700_000_000.5,
    ended_at=1_700_000_060.25,
    exit_code=3,
    image="sha256:" + A,
    environment_hash=A,
    host_hash=B,
    lock_sha256=B,
    code=CodeState(COMMIT, True, A),
    params={"params.yaml": "lr: 0.1\n"},
    data={"data/train.csv": A},
    outputs={"models/model.json": B},
    metrics={"loss": 0.25, "epochs": 3},
    notes=("git: 2 untracked files not hashed",),
    workdir="src/app",
)


def test_a_run_record_comes_back_as_it_was_sent() -> None:
    msg = record_msg(RUN, image="envd-proj:abc", diff="diff --git a b\n")
    assert record_from_msg(msg) == RUN
    assert msg.image == "envd-proj:abc" and msg.image_id == RUN.image
    assert msg.diff == "diff --git a b\n" and msg.finished and not msg.imported


def test_an_imported_run_keeps_its_origin_and_a_clean_one_has_no_diff_digest() -> None:
    imported = replace(RUN, origin="/tmp/s.json", code=CodeState(COMMIT, False, ""))
    back = record_from_msg(record_msg(imported))
    assert back == imported and back.imported and back.origin == "/tmp/s.json"


def test_an_imported_run_without_an_origin_is_still_shown_as_imported() -> None:
    msg = record_msg(RUN)
    msg.imported, msg.origin = True, ""
    assert record_from_msg(msg).origin == "a provenance statement"


@pytest.mark.parametrize(
    ("ended_at", "notes", "finished", "pending"),
    [
        (0.0, (), False, False),
        (5.0, ("outputs and metrics are not recorded (yet)",), True, True),
    ],
)
def test_a_running_or_pending_run_says_so(
    ended_at: float, notes: tuple[str, ...], finished: bool, pending: bool
) -> None:
    msg = record_msg(replace(RUN, ended_at=ended_at, notes=notes))
    assert (msg.finished, msg.details_pending) == (finished, pending)


@pytest.mark.parametrize(
    "change",
    [
        RunChange("param", "params.yaml:lr", "0.1", "0.2"),
        RunChange("output", "models/model.json", None, B),  # added
        RunChange("data", "data/train.csv", A, None),  # removed
        RunChange("param", "params.yaml:tag", "", "x"),  # empty is not absent
    ],
)
def test_a_run_change_keeps_absent_and_empty_apart(change: RunChange) -> None:
    assert run_change_from_msg(run_change_msg(change)) == change


def test_a_fingerprint_and_its_changes_come_back_as_they_were_sent() -> None:
    fp = make_fingerprint(
        EnvironmentSection(
            base_digest="sha256:" + A,
            os_release={"ID": "debian", "VERSION_ID": "12"},
            glibc="2.36",
            arch="amd64",
            debian_packages=(Package("libc6", "2.36-9", "amd64"),),
            python_version="3.11.2",
            python_implementation="CPython",
            python_packages=(Package("numpy", "1.26.4", B),),
            cuda_libraries=(),
            env={"PATH": "/usr/bin"},
            content_hash=A,
            files=12,
        ),
        HostSection(
            cpu_model="Xeon",
            arch="x86_64",
            kernel="6.1",
            engine_version="24.0",
            gpus=(HostGpu("H100", "9.0", 80 << 30),),
            driver_version="550.54",
            cuda_driver_version="12.4",
        ),
    )
    assert from_msg(to_msg(fp)) == fp
    change = Change("environment", "python_packages", "changed", "numpy", "1.26.3", "1.26.4")
    assert change_from_msg(change_msg(change)) == change
