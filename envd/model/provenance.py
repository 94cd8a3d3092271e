"""Run provenance as an in-toto Statement v1 with a SLSA Provenance v1 predicate.

Pure. `build_statement` turns a RunRecord into the statement (`runs export`); `statement_json`
writes it as canonical JSON (sorted keys, compact separators, UTF-8, one trailing newline), so
the same run always gives the same bytes. `check_statement` validates a statement strictly and
says whether a given file (name and sha256) is one of its subjects (`trace FILE --provenance`,
or a colleague checking a result handed to them).

Layout (https://slsa.dev/spec/v1.0/provenance):
  subject: the run's outputs, {name: project-relative path, digest: {sha256}}
  predicate.buildDefinition
    buildType: BUILD_TYPE
    externalParameters: {command: [...], params: {file: text}}
    internalParameters: {project, environmentHash, hostHash, exitCode, envdVersion}
    resolvedDependencies: data files, the code (digest gitCommit), the image (digest sha256,
      annotated with the environment hash) and envd.lock (digest sha256)
  predicate.runDetails
    builder.id: who ran it (envd on this host)
    metadata: invocationId (the run id), startedOn, finishedOn (RFC 3339, UTC)
    byproducts: the metrics, one descriptor: content base64 JSON, annotations {name: number}
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from envd.errors import VerificationError
from envd.model.runrecord import SHA256_RE, CodeState, RunRecord
from envd.model.safenames import relative

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/envd/envd/run/v1"  # envd's run build type
DEFAULT_WORKSPACE = "/workspace"  # where a project lives inside its container
MAX_STATEMENT_CHARS = 64 << 20  # the longest statement read or checked
MAX_CLOCK_SKEW_S = 86_400.0  # an imported run may end this far past this host's clock

_HEX_RE = re.compile(r"^[0-9a-f]+$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40, "gitCommit": (40, 64)}
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


def rfc3339(timestamp: float) -> str:
    """A POSIX time as RFC 3339 UTC (`2026-01-02T03:04:05Z`, milliseconds when not whole)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _file_uri(workspace: str, path: str) -> str:
    return "file://" + quote(f"{workspace.rstrip('/')}/{path.lstrip('/')}")


def _strip_sha256(image: str) -> str:
    return image.removeprefix("sha256:")


def build_statement(
    run: RunRecord,
    *,
    builder_id: str,
    envd_version: str = "",
    repository: str = "",
    workspace: str = DEFAULT_WORKSPACE,
) -> dict[str, Any]:
    """The in-toto Statement for `run`. Outputs recorded as symlinks are not subjects; a run
    with no output file has nothing to attest (ValueError).

    `builder_id` names who ran it (a URI, e.g. `https://github.com/envd/envd/daemon@HOST`);
    `repository` is the code's URI (e.g. `git+https://host/team/churn`), else the workspace.
    """
    if not _URI_RE.match(builder_id):
        raise ValueError(f"builder id {builder_id!r} is not a URI")
    subjects = [
        {"name": path, "digest": {"sha256": digest}}
        for path, digest in sorted(run.outputs.items())
        if SHA256_RE.match(digest)
    ]
    if not subjects:
        raise ValueError(f"run {run.id} recorded no output files: a statement needs a subject")
    dependencies: list[dict[str, Any]] = [
        {"name": path, "uri": _file_uri(workspace, path), "digest": {"sha256": digest}}
        for path, digest in sorted(run.data.items())
        if SHA256_RE.match(digest)
    ]
    if run.code.commit:
        code: dict[str, Any] = {
            "name": "code",
            "uri": repository or "git+file://" + quote(workspace),
            "digest": {"gitCommit": run.code.commit},
            "annotations": {"dirty": run.code.dirty},
        }
        if run.code.diff_sha256:
            code["annotations"]["diffSha256"] = run.code.diff_sha256
        dependencies.append(code)
    image_hex = _strip_sha256(run.image)
    if SHA256_RE.match(image_hex):
        image: dict[str, Any] = {"name": "image", "digest": {"sha256": image_hex}}
        if run.environment_hash:
            image["annotations"] = {"environmentHash": run.environment_hash}
        dependencies.append(image)
    if run.lock_sha256:
        dependencies.append(
            {
                "name": "envd.lock",
                "uri": _file_uri(workspace, "envd.lock"),
                "digest": {"sha256": run.lock_sha256},
            }
        )
    internal: dict[str, Any] = {"exitCode": run.exit_code}
    for key, value in (
        ("project", run.project),
        ("environmentHash", run.environment_hash),
        ("hostHash", run.host_hash),
        ("envdVersion", envd_version),
    ):
        if value:
            internal[key] = value
    run_details: dict[str, Any] = {
        "builder": {"id": builder_id},
        "metadata": {
            "invocationId": run.id,
            "startedOn": rfc3339(run.started_at),
            "finishedOn": rfc3339(run.ended_at),
        },
    }
    if envd_version:
        run_details["builder"]["version"] = {"envd": envd_version}
    if run.metrics:
        metrics = {k: float(v) for k, v in sorted(run.metrics.items())}
        content = json.dumps(metrics, sort_keys=True, separators=(",", ":")).encode()
        run_details["byproducts"] = [
            {
                "name": "metrics",
                "mediaType": "application/json",
                "content": base64.b64encode(content).decode("ascii"),
                "annotations": metrics,
            }
        ]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "command": list(run.command),
                    "params": dict(sorted(run.params.items())),
                },
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": run_details,
        },
    }


def statement_json(statement: Mapping[str, Any]) -> str:
    """Canonical JSON: sorted keys, compact, UTF-8, no NaN, one trailing newline."""
    return (
        json.dumps(
            statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        + "\n"
    )


# ------------------------------------------------------------------ checking


@dataclass(frozen=True)
class StatementCheck:
    """What `check_statement` found.

    `valid`: the statement is well formed. `subject`: the name of the subject whose sha256 is
    the file's ("" if none); `name_matches`: that subject's name is the file's name (or ends
    with it as a path). `ok`: valid and the file's bytes are a subject.
    """

    valid: bool
    errors: tuple[str, ...]
    subject: str = ""
    name_matches: bool = False

    @property
    def ok(self) -> bool:
        return self.valid and bool(self.subject)


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def obj(
        self,
        value: Any,
        where: str,
        required: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
        *,
        closed: bool = True,
    ) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(where, f"expected an object, got {type(value).__name__}")
            return None
        for key in required:
            if key not in value:
                self.fail(where, f"missing {key!r}")
        if closed:
            for key in sorted(set(value) - set(required) - set(optional)):
                self.fail(where, f"unknown field {key!r}")
        return value

    def string(self, value: Any, where: str, *, empty: bool = False) -> str | None:
        if not isinstance(value, str):
            self.fail(where, f"expected a string, got {type(value).__name__}")
            return None
        if not empty and not value:
            self.fail(where, "empty string")
            return None
        return value

    def uri(self, value: Any, where: str) -> None:
        text = self.string(value, where)
        if text is not None and not _URI_RE.match(text):
            self.fail(where, f"{text!r} is not a URI")

    def digest(self, value: Any, where: str) -> dict[str, str]:
        digests = self.obj(value, where, closed=False)
        if digests is None:
            return {}
        if not digests:
            self.fail(where, "no digest")
        out: dict[str, str] = {}
        for alg, hexdigest in digests.items():
            text = self.string(hexdigest, f"{where}.{alg}")
            if text is None:
                continue
            if not _HEX_RE.match(text):
                self.fail(f"{where}.{alg}", f"{text!r} is not lowercase hex")
                continue
            lengths = _DIGEST_LENGTHS.get(alg)
            allowed = lengths if isinstance(lengths, tuple) else (lengths,)
            if lengths is not None and len(text) not in allowed:
                self.fail(f"{where}.{alg}", f"{len(text)} hex digits, expected {lengths}")
                continue
            out[alg] = text
        return out

    def time(self, value: Any, where: str) -> datetime | None:
        text = self.string(value, where)
        if text is None:
            return None
        if not _RFC3339_RE.match(text):
            self.fail(where, f"{text!r} is not an RFC 3339 timestamp")
            return None
        try:
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
        except ValueError:
            self.fail(where, f"{text!r} is not a valid date and time")
            return None

    def resource(self, value: Any, where: str) -> None:
        fields = ("uri", "digest", "name", "content", "downloadLocation", "mediaType")
        rd = self.obj(value, where, (), (*fields, "annotations"))
        if rd is None:
            return
        if not any(k in rd for k in ("uri", "digest", "content")):
            self.fail(where, "needs at least one of uri, digest, content")
        if "uri" in rd:
            self.uri(rd["uri"], f"{where}.uri")
        if "downloadLocation" in rd:
            self.uri(rd["downloadLocation"], f"{where}.downloadLocation")
        if "digest" in rd:
            self.digest(rd["digest"], f"{where}.digest")
        for key in ("name", "content", "mediaType"):
            if key in rd:
                self.string(rd[key], f"{where}.{key}")
        if isinstance(rd.get("content"), str):
            try:
                base64.b64decode(rd["content"], validate=True)
            except ValueError:
                self.fail(f"{where}.content", "not base64")
        if "annotations" in rd:
            self.obj(rd["annotations"], f"{where}.annotations", closed=False)


def _no_bad_numbers(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_no_bad_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_bad_numbers(v) for v in value)
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def check_statement(statement_json_text: str, file_name: str, file_sha256: str) -> StatementCheck:
    """Validate an in-toto Statement v1 / SLSA Provenance v1 strictly; is the file a subject?

    Strict: the statement's and the predicate's fields are typed and closed (unknown fields
    are errors; `annotations` and parameters are free), digests are lowercase hex of the right
    length, timestamps RFC 3339, duplicate JSON keys and NaN refused.
    """
    c = _Checker()
    if len(statement_json_text) > MAX_STATEMENT_CHARS:
        return StatementCheck(False, (f"statement: over {MAX_STATEMENT_CHARS} characters",))
    if not SHA256_RE.match(file_sha256):
        c.fail("file", f"{file_sha256!r} is not a sha256 hex digest")
    try:
        raw = json.loads(
            statement_json_text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except ValueError as exc:
        return StatementCheck(False, (f"statement: not valid JSON: {exc}",))
    except RecursionError:
        return StatementCheck(False, ("statement: nested too deeply",))
    top = c.obj(raw, "statement", ("_type", "subject", "predicateType", "predicate"))
    if top is None:
        return StatementCheck(False, tuple(c.errors))
    if "_type" in top and top["_type"] != STATEMENT_TYPE:
        c.fail("_type", f"{top['_type']!r}, expected {STATEMENT_TYPE!r}")
    if "predicateType" in top and top["predicateType"] != PREDICATE_TYPE:
        c.fail("predicateType", f"{top['predicateType']!r}, expected {PREDICATE_TYPE!r}")

    subjects: list[tuple[str, dict[str, str]]] = []
    raw_subjects = top.get("subject")
    if "subject" in top and not isinstance(raw_subjects, list):
        c.fail("subject", "expected a list")
    elif isinstance(raw_subjects, list):
        if not raw_subjects:
            c.fail("subject", "empty")
        for i, item in enumerate(raw_subjects):
            where = f"subject[{i}]"
            s = c.obj(item, where, ("digest",), ("name", "uri", "annotations"))
            if s is None:
                continue
            name = c.string(s.get("name", ""), f"{where}.name", empty=True) or ""
            if "uri" in s:
                c.uri(s["uri"], f"{where}.uri")
            subjects.append((name, c.digest(s.get("digest"), f"{where}.digest")))

    predicate = c.obj(top.get("predicate", {}), "predicate", ("buildDefinition", "runDetails"))
    if predicate is not None:
        bd = c.obj(
            predicate.get("buildDefinition", {}),
            "predicate.buildDefinition",
            ("buildType", "externalParameters"),
            ("internalParameters", "resolvedDependencies"),
        )
        if bd is not None:
            if "buildType" in bd:
                c.uri(bd["buildType"], "predicate.buildDefinition.buildType")
            ext = bd.get("externalParameters", {})
            c.obj(ext, "predicate.buildDefinition.externalParameters", closed=False)
            if "internalParameters" in bd:
                c.obj(
                    bd["internalParameters"],
                    "predicate.buildDefinition.internalParameters",
                    closed=False,
                )
            deps = bd.get("resolvedDependencies", [])
            if not isinstance(deps, list):
                c.fail("predicate.buildDefinition.resolvedDependencies", "expected a list")
            else:
                for i, dep in enumerate(deps):
                    c.resource(dep, f"predicate.buildDefinition.resolvedDependencies[{i}]")
        rd = c.obj(
            predicate.get("runDetails", {}),
            "predicate.runDetails",
            ("builder",),
            ("metadata", "byproducts"),
        )
        if rd is not None:
            builder = c.obj(
                rd.get("builder", {}),
                "predicate.runDetails.builder",
                ("id",),
                ("version", "builderDependencies"),
            )
            if builder is not None:
                if "id" in builder:
                    c.uri(builder["id"], "predicate.runDetails.builder.id")
                if "version" in builder:
                    version = c.obj(
                        builder["version"], "predicate.runDetails.builder.version", closed=False
                    )
                    for key, value in (version or {}).items():
                        c.string(value, f"predicate.runDetails.builder.version.{key}")
                for i, dep in enumerate(
                    _list(c, builder, "builderDependencies", "predicate.runDetails.builder")
                ):
                    c.resource(dep, f"predicate.runDetails.builder.builderDependencies[{i}]")
            if "metadata" in rd:
                _check_metadata(c, rd["metadata"])
            for i, item in enumerate(_list(c, rd, "byproducts", "predicate.runDetails")):
                c.resource(item, f"predicate.runDetails.byproducts[{i}]")

    try:
        finite = _no_bad_numbers(raw)
    except RecursionError:
        finite = False
    if not finite:
        c.fail("statement", "contains a non-finite number, or is nested too deeply")

    subject, name_matches = "", False
    for name, digests in subjects:
        if digests.get("sha256") == file_sha256:
            matches = _name_matches(name, file_name)
            if not subject or (matches and not name_matches):
                subject, name_matches = name or "(unnamed)", matches
    return StatementCheck(not c.errors, tuple(c.errors), subject, name_matches)


def _list(c: _Checker, parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    if key not in parent:
        return []
    value = parent[key]
    if not isinstance(value, list):
        c.fail(f"{where}.{key}", "expected a list")
        return []
    return value


def _check_metadata(c: _Checker, value: Any) -> None:
    where = "predicate.runDetails.metadata"
    md = c.obj(value, where, (), ("invocationId", "startedOn", "finishedOn"))
    if md is None:
        return
    if "invocationId" in md:
        c.string(md["invocationId"], f"{where}.invocationId")
    started = c.time(md["startedOn"], f"{where}.startedOn") if "startedOn" in md else None
    finished = c.time(md["finishedOn"], f"{where}.finishedOn") if "finishedOn" in md else None
    if started and finished and finished < started:
        c.fail(where, "finishedOn is before startedOn")


def _normalise(path: str) -> str:
    path = path.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


def _name_matches(subject_name: str, file_name: str) -> bool:
    """Same path, or one is the other's tail (an absolute path and a project-relative one)."""
    subject, wanted = _normalise(subject_name), _normalise(file_name)
    if not subject or not wanted:
        return False
    return subject == wanted or subject.endswith("/" + wanted) or wanted.endswith("/" + subject)


def _parse_time(text: Any) -> float:
    if not isinstance(text, str) or not _RFC3339_RE.match(text):
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()


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
    started = _parse_time(metadata.get("startedOn"))
    ended = _parse_time(metadata.get("finishedOn"))
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
