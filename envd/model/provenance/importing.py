"""A statement made elsewhere as a run record (`runs import`): every value checked, bounded,
or refused with what and why."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from envd.errors import VerificationError
from envd.model.provenance.check import check_statement, parse_time
from envd.model.provenance.statement import BUILD_TYPE, MAX_CLOCK_SKEW_S, rfc3339
from envd.model.runrecord import CodeState, RunRecord
from envd.model.safenames import relative


class StatementRefused(VerificationError, ValueError):
    """A provenance statement `runs import` does not record (exit 9), with what and why."""


_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_ENV_HASH_RE = re.compile(r"^(?:sha256:)?[0-9a-f]{64}$")
_MAX_NAME = 255  # a project's name
_INT32 = (-(2**31), 2**31 - 1)


def _refuse(origin: str, message: str, hint: str | None = None) -> StatementRefused:
    return StatementRefused(
        f"{origin or 'the statement'}: {message}; not imported",
        hint=hint or "import only statements written by `envctl runs export`, unchanged",
    )


def _text(value: Any, origin: str, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _refuse(origin, f"{where} is a {type(value).__name__}, not a string")
    if pattern is not None and value and not pattern.match(value):
        raise _refuse(origin, f"{where} {_shown(value)} is not in the form envd writes")
    return value


def _shown(value: str) -> str:
    return ascii(value if len(value) <= 60 else value[:57] + "...")


def _is_metric(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53


def _path(name: Any, origin: str, where: str) -> str:
    """A project-relative path named by the statement (checked by safenames, as text)."""
    if not isinstance(name, str):
        raise _refuse(origin, f"{where} is not a string")
    return str(relative(name, f"{origin or 'statement'}: {where}"))


def record_from_statement(
    statement_json_text: str,
    *,
    origin: str = "",
    now: float | None = None,
    skew_s: float = MAX_CLOCK_SKEW_S,
) -> RunRecord:
    """The run a statement made by `build_statement` describes (`runs import`), marked as
    imported from `origin` (where it was read: a file name, "a provenance statement" if "").

    The statement must pass `check_statement` and use envd's build type, and each field it
    sets must have the type and form envd writes (names are relative paths, the run id a
    short token, the environment hash `sha256:<hex>`). With `now`, a start or end later than
    `now + skew_s` is refused: a run from the future would rank first in `trace` and `runs`.
    Every refusal is a StatementRefused (a VerificationError, and a ValueError).
    Times come back at the statement's millisecond precision.
    """
    label = origin or "a provenance statement"
    check = check_statement(statement_json_text, "", "0" * 64)
    if not check.valid:
        raise _refuse(origin, "invalid statement: " + "; ".join(check.errors[:5]))
    raw = json.loads(statement_json_text)
    predicate = raw["predicate"]
    definition = predicate["buildDefinition"]
    if definition.get("buildType") != BUILD_TYPE:
        raise _refuse(
            origin,
            f"build type {_shown(str(definition.get('buildType')))} is not envd's run",
        )
    external = definition.get("externalParameters", {})
    internal = definition.get("internalParameters", {})
    details = predicate.get("runDetails", {})
    metadata = details.get("metadata", {})

    run_id = _text(metadata.get("invocationId"), origin, "the run id (invocationId)", _RUN_ID_RE)
    if not run_id:
        raise _refuse(origin, "it names no run id (runDetails.metadata.invocationId)")
    started = parse_time(metadata.get("startedOn"))
    ended = parse_time(metadata.get("finishedOn"))
    if now is not None:
        for field_name, when in (("startedOn", started), ("finishedOn", ended)):
            if when > now + skew_s:
                raise _refuse(
                    origin,
                    f"{field_name} {metadata.get(field_name)} is in the future (this host's "
                    f"clock says {rfc3339(now)})",
                    hint="a run cannot start or end after now; ask its author for a statement "
                    "from `envctl runs export`, or check this host's clock",
                )
    command = external.get("command", [])
    if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
        raise _refuse(origin, "the command (externalParameters.command) is not a list of strings")
    exit_code = internal.get("exitCode", 0)
    if (
        isinstance(exit_code, bool)
        or not isinstance(exit_code, int)
        or not _INT32[0] <= exit_code <= _INT32[1]
    ):
        raise _refuse(origin, f"the exit code {_shown(str(exit_code))} is not an exit status")
    project = _text(internal.get("project"), origin, "the project")
    if len(project) > _MAX_NAME:
        raise _refuse(origin, f"the project name is {len(project)} characters long")
    environment_hash = _text(
        internal.get("environmentHash"), origin, "the environment hash", _ENV_HASH_RE
    )
    host_hash = _text(internal.get("hostHash"), origin, "the host hash", _ENV_HASH_RE)

    outputs: dict[str, str] = {}
    for i, item in enumerate(raw["subject"]):
        digest = item.get("digest", {})
        if item.get("name") and "sha256" in digest:
            outputs[_path(item["name"], origin, f"subject[{i}].name")] = str(digest["sha256"])
    data: dict[str, str] = {}
    code = CodeState()
    image = ""
    lock = ""
    for i, dep in enumerate(definition.get("resolvedDependencies", [])):
        name, digest = dep.get("name", ""), dep.get("digest", {})
        notes = dep.get("annotations", {})
        if name == "code" and "gitCommit" in digest:
            dirty = notes.get("dirty", False)
            diff_sha = notes.get("diffSha256", "") if dirty is True else ""
            if not isinstance(dirty, bool) or not isinstance(diff_sha, str):
                raise _refuse(origin, "the code's annotations are not envd's")
            try:
                code = CodeState(str(digest["gitCommit"]), dirty, diff_sha)
            except ValueError as exc:
                raise _refuse(origin, f"the code: {exc}") from None
        elif name == "image" and "sha256" in digest:
            image = "sha256:" + str(digest["sha256"])
        elif name == "envd.lock" and "sha256" in digest:
            lock = str(digest["sha256"])
        elif name and "sha256" in digest:
            where = f"resolvedDependencies[{i}].name"
            data[_path(name, origin, where)] = str(digest["sha256"])
    metrics: dict[str, float] = {}
    for item in details.get("byproducts", []):
        if item.get("name") == "metrics":
            metrics = {
                str(k): float(v) for k, v in item.get("annotations", {}).items() if _is_metric(v)
            }
    params = external.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise _refuse(origin, "the params (externalParameters.params) are not {file: text}")
    try:
        return RunRecord(
            id=run_id,
            project=project,
            command=tuple(command),
            started_at=started,
            ended_at=ended,
            exit_code=exit_code,
            image=image,
            environment_hash=environment_hash,
            host_hash=host_hash,
            lock_sha256=lock,
            code=code,
            params={_path(k, origin, "a params file"): v for k, v in params.items()},
            data=data,
            outputs=outputs,
            metrics=metrics,
            origin=label,
        )
    except ValueError as exc:
        raise _refuse(origin, str(exc)) from None
