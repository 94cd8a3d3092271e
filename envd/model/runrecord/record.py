"""The run record: what one run read (params, data), made (outputs) and scored (metrics),
and the code it ran; the checks its values pass."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from envd.model.runrecord.parsing import flatten_params_files

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GIT_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
SYMLINK_PREFIX = "symlink:"


def is_project_subdir(path: str) -> bool:
    """A relative POSIX path that stays inside the project ("" is its root)."""
    if not path:
        return True
    return not path.startswith("/") and all(p not in ("", ".", "..") for p in path.split("/"))


def is_digest(value: str) -> bool:
    """A file's recorded digest: 64 lowercase hex, or `symlink:<target>` for a link."""
    return bool(SHA256_RE.match(value)) or (
        value.startswith(SYMLINK_PREFIX) and len(value) > len(SYMLINK_PREFIX)
    )


# ------------------------------------------------------------------ the record


@dataclass(frozen=True)
class CodeState:
    """The project's code at the start of a run: commit, dirty flag, sha256 of `git diff HEAD`."""

    commit: str = ""  # "" outside a git repository
    dirty: bool = False
    diff_sha256: str = ""  # "" when clean

    def __post_init__(self) -> None:
        if self.commit and not GIT_COMMIT_RE.match(self.commit):
            raise ValueError(f"git commit {self.commit!r} is not 40 or 64 lowercase hex digits")
        if self.diff_sha256 and not SHA256_RE.match(self.diff_sha256):
            raise ValueError(f"diff sha256 {self.diff_sha256!r} is not 64 lowercase hex digits")
        if self.diff_sha256 and not self.dirty:
            raise ValueError("a clean tree has no diff hash")


@dataclass(frozen=True)
class RunRecord:
    """One run, as `envctl runs`, `runs diff`, `trace` and provenance export see it.

    The first fields mirror the store's RunRow; the rest are what envd.yaml's `runs:` section
    adds: params {file: text}, data {path: sha256}, outputs {path: sha256} (files the run
    created or changed), metrics {name: float}.
    """

    id: str
    project: str = ""
    command: tuple[str, ...] = ()
    started_at: float = 0.0
    ended_at: float = 0.0
    exit_code: int = 0
    image: str = ""  # image id, "sha256:<hex>"
    environment_hash: str = ""
    host_hash: str = ""
    lock_sha256: str = ""
    code: CodeState = field(default_factory=CodeState)
    params: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what was skipped while recording, for the user
    workdir: str = ""  # where in the project it ran: relative POSIX path, "" for the root
    # Where an imported run came from (the statement's file, or "a provenance statement");
    # "" for a run made here. Shown wherever the run is, and ranked after local runs.
    origin: str = ""

    @property
    def imported(self) -> bool:
        return bool(self.origin)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a run needs an id")
        if not is_project_subdir(self.workdir):
            raise ValueError(f"workdir {self.workdir!r} is not a path inside the project")
        for kind, mapping in (("data", self.data), ("outputs", self.outputs)):
            for path, digest in mapping.items():
                if not isinstance(path, str) or not path:
                    raise ValueError(f"{kind}: empty path")
                if not isinstance(digest, str) or not is_digest(digest):
                    raise ValueError(f"{kind}: {path}: {digest!r} is not a sha256 hex digest")
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"metric {name}: {value!r} is not a number")
            if not math.isfinite(value):
                raise ValueError(f"metric {name}: {value!r} is not finite")
        if self.lock_sha256 and not SHA256_RE.match(self.lock_sha256):
            raise ValueError(f"lock sha256 {self.lock_sha256!r} is not 64 lowercase hex digits")

    @cached_property
    def param_values(self) -> dict[str, str]:
        """The params files flattened to dotted keys (see `flatten_params_files`)."""
        return flatten_params_files(self.params)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "command": list(self.command),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "image": self.image,
            "environment_hash": self.environment_hash,
            "host_hash": self.host_hash,
            "lock_sha256": self.lock_sha256,
            "code": {
                "commit": self.code.commit,
                "dirty": self.code.dirty,
                "diff_sha256": self.code.diff_sha256,
            },
            "params": dict(sorted(self.params.items())),
            "data": dict(sorted(self.data.items())),
            "outputs": dict(sorted(self.outputs.items())),
            "metrics": {k: float(v) for k, v in sorted(self.metrics.items())},
            "notes": list(self.notes),
            "workdir": self.workdir,
            **({"origin": self.origin} if self.origin else {}),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact, UTF-8): same record, same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunRecord:
        code = raw.get("code") or {}
        return cls(
            id=str(raw["id"]),
            project=str(raw.get("project", "")),
            command=tuple(str(c) for c in raw.get("command", ())),
            started_at=float(raw.get("started_at", 0.0)),
            ended_at=float(raw.get("ended_at", 0.0)),
            exit_code=int(raw.get("exit_code", 0)),
            image=str(raw.get("image", "")),
            environment_hash=str(raw.get("environment_hash", "")),
            host_hash=str(raw.get("host_hash", "")),
            lock_sha256=str(raw.get("lock_sha256", "")),
            code=CodeState(
                commit=str(code.get("commit", "")),
                dirty=bool(code.get("dirty", False)),
                diff_sha256=str(code.get("diff_sha256", "")),
            ),
            params={str(k): str(v) for k, v in (raw.get("params") or {}).items()},
            data={str(k): str(v) for k, v in (raw.get("data") or {}).items()},
            outputs={str(k): str(v) for k, v in (raw.get("outputs") or {}).items()},
            metrics={str(k): float(v) for k, v in (raw.get("metrics") or {}).items()},
            notes=tuple(str(n) for n in raw.get("notes", ())),
            workdir=str(raw.get("workdir", "")),
            origin=str(raw.get("origin", "")),
        )

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a run record is a JSON object")
        return cls.from_dict(raw)
