"""A shared run as one OCI 1.1 artifact (pure): the manifest `envctl share run` writes and
the checks `envctl pull run` and `runs --from` make on what a registry sends back.

    manifest  artifactType application/vnd.envd.run.v1+json, tagged by run id
    config    the run record and its in-toto statement (canonical JSON), same media type
    layers    one blob per params file, metrics file, data file and output, titled by its
              project-relative path (`org.opencontainers.image.title`) and kind
    subject   the environment image's manifest, in the same repository

Everything read back is untrusted: titles go through `envd.model.safenames`, the run comes
from the statement by the hardened import path (`record_from_statement`), and each data,
output and params blob must carry the digest the statement records for its path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from envd.errors import VerificationError
from envd.model.provenance import StatementRefused, record_from_statement, statement_json
from envd.model.runrecord import SHA256_RE, RunRecord, is_project_subdir
from envd.model.safenames import relative

ARTIFACT_TYPE = "application/vnd.envd.run.v1+json"
FILE_TYPE = "application/vnd.envd.run.file.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"
KIND = "dev.envd.run.kind"
RUN_ID = "dev.envd.run.id"
MAX_MANIFEST = 4 << 20  # a run with thousands of files still fits
MAX_CONFIG = 72 << 20  # the statement's bound, and the record beside it
MAX_FILES = 100_000
Kind = Literal["params", "metrics", "data", "output"]
KINDS: tuple[Kind, ...] = ("params", "metrics", "data", "output")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ArtifactRefused(VerificationError):
    """What a registry sent is not a run envd shared, or does not match itself (exit 9)."""


@dataclass(frozen=True)
class RunFile:
    kind: Kind
    path: str  # project-relative POSIX path
    digest: str  # "sha256:<hex>"
    size: int


@dataclass(frozen=True)
class Artifact:
    """A run artifact's manifest, checked: its config, files and subject."""

    config_digest: str
    config_size: int
    files: tuple[RunFile, ...]
    subject: str  # the environment image's manifest digest
    run_id: str


@dataclass(frozen=True)
class SharedRun:
    """A run read back from a registry: the record (from its statement), who shared it, when."""

    record: RunRecord
    shared_by: str
    shared_at: str


def tag_for(run_id: str) -> str:
    """The tag a run is shared under: its id, where that is a valid tag."""
    if not _TAG_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} cannot be a registry tag")
    return run_id


def config_json(record: RunRecord, statement: Mapping[str, Any], shared_by: str, at: str) -> bytes:
    """The artifact's config: canonical JSON of the record, its statement, who and when."""
    document = {
        "record": record.to_dict(),
        "statement": statement,
        "sharedBy": shared_by,
        "sharedAt": at,
    }
    return statement_json(document).encode("utf-8")


def manifest_json(
    config_digest: str,
    config_size: int,
    files: Sequence[RunFile],
    subject: tuple[str, int, str],
    run_id: str,
    created: str,
) -> bytes:
    """The OCI 1.1 artifact manifest, canonical JSON. `subject` is (digest, size, media type)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": ARTIFACT_TYPE, "digest": config_digest, "size": config_size},
        "layers": [
            {
                "mediaType": FILE_TYPE,
                "digest": f.digest,
                "size": f.size,
                "annotations": {TITLE: f.path, KIND: f.kind},
            }
            for f in files
        ],
        "subject": {"mediaType": subject[2], "digest": subject[0], "size": subject[1]},
        "annotations": {RUN_ID: run_id, "org.opencontainers.image.created": created},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def referrers_index(existing: Iterable[Mapping[str, Any]], added: Mapping[str, Any]) -> bytes:
    """The tag-schema fallback index: `existing` descriptors plus `added`; one per digest, and
    one per run (a run shared again replaces its earlier manifest there)."""

    def run_of(d: Mapping[str, Any]) -> Any:
        annotations = d.get("annotations")
        return annotations.get(RUN_ID) if isinstance(annotations, Mapping) else None

    run = run_of(added)
    manifests = [
        dict(d)
        for d in existing
        if d.get("digest") != added.get("digest") and (run is None or run_of(d) != run)
    ]
    manifests.append(dict(added))
    manifests.sort(key=lambda d: str(d.get("digest", "")))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(index, sort_keys=True, separators=(",", ":")).encode("utf-8")


def descriptor(digest: str, size: int, run_id: str) -> dict[str, Any]:
    return {
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "digest": digest,
        "size": size,
        "annotations": {RUN_ID: run_id},
    }


# ------------------------------------------------------------------ reading back


def _refuse(where: str, message: str) -> ArtifactRefused:
    return ArtifactRefused(
        f"{where}: {message}; refused",
        hint="ask whoever shared it to share the run again (`envctl share run`)",
    )


def _digest(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise _refuse(where, f"{what} is not a sha256 digest")
    return value


def _size(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 53:
        raise _refuse(where, f"{what} has no valid size")
    return value


def parse_manifest(raw: bytes, where: str) -> Artifact:
    """The run artifact a manifest describes; refused unless it is one envd shares and every
    title is a safe project-relative path, named once."""
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse(where, "the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise _refuse(where, "the manifest is not a JSON object")
    if manifest.get("artifactType") != ARTIFACT_TYPE:
        raise _refuse(where, f"it is not a shared run (artifactType {ARTIFACT_TYPE} expected)")
    config = manifest.get("config")
    subject = manifest.get("subject")
    layers = manifest.get("layers")
    annotations = manifest.get("annotations") or {}
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise _refuse(where, "the manifest has no config or no layers")
    if not isinstance(subject, dict):
        raise _refuse(where, "the manifest names no environment image (subject)")
    if not isinstance(annotations, dict):
        raise _refuse(where, "the manifest's annotations are not an object")
    if len(layers) > MAX_FILES:
        raise _refuse(where, f"it lists {len(layers)} files")
    config_digest = _digest(config.get("digest"), where, "the config")
    config_size = _size(config.get("size"), where, "the config")
    if config_size > MAX_CONFIG:
        raise _refuse(where, f"its config is {config_size} bytes")
    files: list[RunFile] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("annotations"), dict):
            raise _refuse(where, f"layer {i} has no annotations")
        title, kind = layer["annotations"].get(TITLE), layer["annotations"].get(KIND)
        if not isinstance(title, str) or kind not in KINDS:
            raise _refuse(where, f"layer {i} names no file or no kind")
        path = relative(title, f"{where}: layer {i}").as_posix()
        if path in seen:
            raise _refuse(where, f"{path} is named twice")
        seen.add(path)
        digest = _digest(layer.get("digest"), where, f"layer {i}")
        files.append(RunFile(kind, path, digest, _size(layer.get("size"), where, f"layer {i}")))
    run_id = annotations.get(RUN_ID, "")
    return Artifact(
        config_digest,
        config_size,
        tuple(files),
        _digest(subject.get("digest"), where, "the subject"),
        str(run_id) if isinstance(run_id, str) else "",
    )


def parse_config(raw: bytes, origin: str, now: float) -> SharedRun:
    """The run a config describes: from its statement, through the import path that refuses
    runs dated in the future, commands that are not lists and names that leave the project.
    The record beside the statement adds only its workdir (a checked relative path)."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _refuse(origin, "the run's config is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("statement"), dict):
        raise _refuse(origin, "the run's config carries no statement")
    try:
        record = record_from_statement(
            statement_json(document["statement"]), origin=origin, now=now
        )
    except StatementRefused:
        raise
    except (ValueError, TypeError) as exc:
        raise _refuse(origin, f"its statement: {exc}") from None
    extra = document.get("record")
    if isinstance(extra, dict):
        workdir = extra.get("workdir", "")
        if isinstance(workdir, str) and workdir:
            workdir = relative(workdir, f"{origin}: workdir").as_posix()
            if is_project_subdir(workdir):
                record = replace(record, workdir=workdir)
    who, at = document.get("sharedBy", ""), document.get("sharedAt", "")
    return SharedRun(
        record,
        _printable(who if isinstance(who, str) else ""),
        _printable(at if isinstance(at, str) else ""),
    )


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def check_files(artifact: Artifact, record: RunRecord, where: str) -> None:
    """Each data, output and params blob must be what the run recorded for its path."""
    for f in artifact.files:
        hexdigest = f.digest.removeprefix("sha256:")
        if f.kind == "data":
            expected = record.data.get(f.path)
        elif f.kind == "output":
            expected = record.outputs.get(f.path)
        elif f.kind == "params":
            text = record.params.get(f.path)
            expected = None if text is None else _sha256_text(text)
        else:
            continue
        if expected is None or not SHA256_RE.match(expected) or expected != hexdigest:
            raise _refuse(
                where,
                f"its {f.kind} file {f.path} ({hexdigest[:12]}) is not the one the run "
                f"records ({(expected or 'none')[:12]})",
            )


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
