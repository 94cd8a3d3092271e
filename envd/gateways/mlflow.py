"""MLflow bridge: log a finished run to an MLflow tracking server over its REST API.

No `mlflow` package is needed on envd's side (the server is the user's): the REST API 2.0
(`/api/2.0/mlflow/...`) is plain JSON over HTTP. The project is the experiment; the envd run
id is the MLflow run's name and the tag `envd.run_id`; params are the flattened params files;
metrics the run's metrics; tags carry envd's hashes (environment, host, lock, image, code,
data, outputs), so an MLflow run leads back to `envctl trace`. Two artifacts go with it, under
`envd/`: the environment's fingerprint (`envctl fingerprint`'s file) and the run record.

Artifacts are uploaded through the server's artifact proxy (`mlflow server`'s default since
MLflow 2: an artifact URI `mlflow-artifacts:/...`) or written to a local artifact root
(`file:` URI or a path). Any other store (s3:, gs:, ...) cannot be reached over the REST API:
the run is logged without them and the tag `envd.artifacts` says why.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlparse

from envd.model.runrecord import RunRecord

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_PARAM_VALUE = 6000  # MLflow's limits
MAX_KEY = 250
MAX_TAG_VALUE = 8000
_BATCH = 100
_BAD_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")
ARTIFACT_DIR = "envd"
FINGERPRINT_ARTIFACT = f"{ARTIFACT_DIR}/fingerprint.json"
RECORD_ARTIFACT = f"{ARTIFACT_DIR}/run.json"

# The environment's fingerprint document for an image id ("sha256:..."), None when not recorded.
FingerprintLookup = Callable[[str], str | None]


class MlflowError(Exception):
    pass


def _key(name: str) -> str:
    return _BAD_KEY.sub("_", name)[:MAX_KEY] or "_"


def tags_for(run: RunRecord) -> dict[str, str]:
    tags = {
        "mlflow.runName": run.id,
        "mlflow.source.name": " ".join(run.command)[:MAX_TAG_VALUE],
        "envd.run_id": run.id,
        "envd.project": run.project,
        "envd.command": json.dumps(list(run.command))[:MAX_TAG_VALUE],
        "envd.exit_code": str(run.exit_code),
        "envd.environment_hash": run.environment_hash,
        "envd.host_hash": run.host_hash,
        "envd.lock_sha256": run.lock_sha256,
        "envd.image": run.image,
        "envd.git_commit": run.code.commit,
        "envd.git_dirty": str(run.code.dirty).lower(),
        "envd.diff_sha256": run.code.diff_sha256,
    }
    if run.code.commit:
        tags["mlflow.source.git.commit"] = run.code.commit
    for path, digest in sorted(run.data.items()):
        tags[_key(f"envd.data.{path}")] = digest
    for path, digest in sorted(run.outputs.items()):
        tags[_key(f"envd.output.{path}")] = digest
    return {k: v for k, v in tags.items() if v}


class MlflowClient:
    def __init__(self, tracking_uri: str, timeout: float = TIMEOUT_S) -> None:
        self._base = tracking_uri.rstrip("/") + "/api/2.0/mlflow/"
        self._timeout = timeout

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        raw: bytes | None = None,
        base: str = "",
    ) -> dict[str, Any]:
        url = (base or self._base) + path
        data = raw
        content_type = "application/octet-stream" if raw is not None else "application/json"
        if method == "GET" and body:
            url += "?" + urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as reply:
                text = reply.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise MlflowError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MlflowError(f"{method} {path}: {exc}") from None
        result: dict[str, Any] = json.loads(text)
        return result

    def experiment_id(self, name: str) -> str:
        try:
            found = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except MlflowError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        try:
            return str(self._call("POST", "experiments/create", {"name": name})["experiment_id"])
        except MlflowError as exc:  # another daemon created it meanwhile
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
            found = self._call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])

    def upload(self, artifact_uri: str, name: str, content: bytes) -> str:
        """Put `content` at `name` under a run's artifact URI; "" or why it could not."""
        parsed = urlparse(artifact_uri)
        if parsed.scheme == "mlflow-artifacts":
            # mlflow-artifacts:/<path> (or mlflow-artifacts://host:port/<path>): the proxy at
            # <server>/api/2.0/mlflow-artifacts/artifacts/<path>
            path = parsed.path.strip("/")
            if parsed.netloc:
                base = f"http://{parsed.netloc}/api/2.0/mlflow-artifacts/artifacts/"
            else:
                base = self._base.replace(
                    "/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/artifacts/"
                )
            self._call("PUT", quote(f"{path}/{name}"), raw=content, base=base)
            return ""
        if parsed.scheme in ("", "file"):
            root = Path(unquote(parsed.path) if parsed.scheme else artifact_uri)
            if not root.is_absolute():
                return f"artifact root {artifact_uri} is not an absolute path"
            target = root / name
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError as exc:
                return f"artifact root {artifact_uri} not writable here: {exc}"
            return ""
        return (
            f"artifact store {parsed.scheme}: is not reachable over MLflow's REST API "
            "(start `mlflow server` with its artifact proxy, the default)"
        )

    def log_run(self, run: RunRecord, fingerprint: str | None = None) -> str:
        """Create the MLflow run for `run`, log everything, end it; the MLflow run id.

        `fingerprint`: the environment's fingerprint document, uploaded as an artifact.
        """
        experiment = self.experiment_id(run.project or "envd")
        created = self._call(
            "POST",
            "runs/create",
            {
                "experiment_id": experiment,
                "run_name": run.id,
                "start_time": int(run.started_at * 1000),
                "tags": [{"key": k, "value": v} for k, v in tags_for(run).items()],
            },
        )
        info = created["run"]["info"]
        run_id = str(info["run_id"])
        artifacts = {RECORD_ARTIFACT: run.to_json().encode() + b"\n"}
        if fingerprint:
            artifacts[FINGERPRINT_ARTIFACT] = fingerprint.encode()
        problem = ""
        for name, content in sorted(artifacts.items()):
            try:
                problem = self.upload(str(info.get("artifact_uri", "")), name, content)
            except MlflowError as exc:
                problem = f"artifact {name} not uploaded: {exc}"
            if problem:
                log.warning("run %s: %s", run.id, problem)
                break
        tags = {"envd.artifacts": problem or ", ".join(sorted(artifacts))}
        if not fingerprint:
            tags["envd.fingerprint"] = "not recorded for this image"
        params = [
            {"key": _key(k), "value": v[:MAX_PARAM_VALUE]} for k, v in run.param_values.items()
        ]
        stamp = int((run.ended_at or run.started_at) * 1000)
        metrics = [
            {"key": _key(k), "value": v, "timestamp": stamp, "step": 0}
            for k, v in sorted(run.metrics.items())
        ]
        tag_list = [{"key": k, "value": v[:MAX_TAG_VALUE]} for k, v in tags.items()]
        for start in range(0, max(len(params), len(metrics), 1), _BATCH):
            self._call(
                "POST",
                "runs/log-batch",
                {
                    "run_id": run_id,
                    "params": params[start : start + _BATCH],
                    "metrics": metrics[start : start + _BATCH],
                    "tags": tag_list if start == 0 else [],
                },
            )
        self._call(
            "POST",
            "runs/update",
            {
                "run_id": run_id,
                "status": "FINISHED" if run.exit_code == 0 else "FAILED",
                "end_time": stamp,
            },
        )
        return run_id


def mlflow_sink(
    tracking_uri: Callable[[], str], fingerprint: FingerprintLookup | None = None
) -> Callable[[RunRecord], None]:
    """A Runs sink: logs each finished run when a tracking URI is configured (else nothing);
    `fingerprint` finds the fingerprint document of the run's image, for the artifact."""

    def sink(run: RunRecord) -> None:
        uri = tracking_uri()
        if not uri:
            return
        document = fingerprint(run.image) if fingerprint is not None and run.image else None
        mlflow_id = MlflowClient(uri).log_run(run, document)
        log.info("run %s logged to MLflow %s as %s", run.id, uri, mlflow_id)

    return sink
