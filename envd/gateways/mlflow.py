"""MLflow bridge: log a finished run to an MLflow tracking server over its REST API.

No `mlflow` package is needed on envd's side (the server is the user's): the REST API 2.0
(`/api/2.0/mlflow/...`) is plain JSON over HTTP. The project is the experiment; the envd run
id is the MLflow run's name and the tag `envd.run_id`; params are the flattened params files;
metrics the run's metrics; tags carry envd's hashes (environment, host, lock, code, data,
outputs), so an MLflow run leads back to `envctl trace`.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from envd.model.runrecord import RunRecord

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_PARAM_VALUE = 6000  # MLflow's limits
MAX_KEY = 250
MAX_TAG_VALUE = 8000
_BATCH = 100
_BAD_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")


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

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self._base + path
        data = None
        if method == "GET" and body:
            from urllib.parse import urlencode

            url += "?" + urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
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

    def log_run(self, run: RunRecord) -> str:
        """Create the MLflow run for `run`, log everything, end it; the MLflow run id."""
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
        run_id = str(created["run"]["info"]["run_id"])
        params = [
            {"key": _key(k), "value": v[:MAX_PARAM_VALUE]} for k, v in run.param_values.items()
        ]
        stamp = int((run.ended_at or run.started_at) * 1000)
        metrics = [
            {"key": _key(k), "value": v, "timestamp": stamp, "step": 0}
            for k, v in sorted(run.metrics.items())
        ]
        for start in range(0, max(len(params), len(metrics)), _BATCH):
            self._call(
                "POST",
                "runs/log-batch",
                {
                    "run_id": run_id,
                    "params": params[start : start + _BATCH],
                    "metrics": metrics[start : start + _BATCH],
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


def mlflow_sink(tracking_uri: Callable[[], str]) -> Callable[[RunRecord], None]:
    """A Runs sink: logs each finished run when a tracking URI is configured (else nothing)."""

    def sink(run: RunRecord) -> None:
        uri = tracking_uri()
        if not uri:
            return
        mlflow_id = MlflowClient(uri).log_run(run)
        log.info("run %s logged to MLflow %s as %s", run.id, uri, mlflow_id)

    return sink
