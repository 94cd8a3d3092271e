"""Building a run's statement: `build_statement` turns a RunRecord into an in-toto Statement v1
with a SLSA Provenance v1 predicate; `statement_json` writes it as canonical JSON."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from envd.model.plan import WORKDIR
from envd.model.runrecord import SHA256_RE, RunRecord

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/envd/envd/run/v1"  # envd's run build type
DEFAULT_WORKSPACE = WORKDIR  # where a project lives inside its container
MAX_STATEMENT_CHARS = 64 << 20  # the longest statement read or checked
MAX_CLOCK_SKEW_S = 86_400.0  # an imported run may end this far past this host's clock

URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$")


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
    if not URI_RE.match(builder_id):
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
