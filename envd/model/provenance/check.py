"""Checking a statement strictly, and whether a file (name and sha256) is one of its subjects
(`trace FILE --provenance`)."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from envd.model.provenance.statement import (
    MAX_STATEMENT_CHARS,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    URI_RE,
)
from envd.model.runrecord import SHA256_RE

_HEX_RE = re.compile(r"^[0-9a-f]+$")
_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128, "sha1": 40, "gitCommit": (40, 64)}
_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
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
        if text is not None and not URI_RE.match(text):
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


def parse_time(text: Any) -> float:
    if not isinstance(text, str) or not _RFC3339_RE.match(text):
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
