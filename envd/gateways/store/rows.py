"""The rows the store returns (small frozen dataclasses, never sqlite3.Row), and how a
SELECT's tuple becomes one."""

from __future__ import annotations

import json
from dataclasses import dataclass

from envd.model.state import ProjectState


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


def details_row(row: tuple[object, ...]) -> RunDetailsRow:
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


def run_row(row: tuple[object, ...]) -> RunRow:
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


def project_row(row: tuple[object, ...]) -> ProjectRow:
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
