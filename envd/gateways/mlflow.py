"""MLflow bridge: log a finished run to an MLflow tracking server over its REST API.

No `mlflow` package is needed on envd's side (the server is the user's): the REST API 2.0
(`/api/2.0/mlflow/...`) is plain JSON over HTTP. The project is the experiment; the envd run
id is the MLflow run's name and the tag `envd.run_id`; params are the flattened params files;
metrics the run's metrics; tags carry envd's hashes (environment, host, lock, image, code,
data, outputs), so an MLflow run leads back to `envctl trace`. Two artifacts go with it, under
`envd/`: the environment's fingerprint (`envctl fingerprint`'s file) and the run record.

Artifacts are uploaded only through the tracking server's own artifact proxy (`mlflow
server`'s default since MLflow 2: an artifact URI `mlflow-artifacts:/...`), over the tracking
URI's scheme to its host and port. The server's reply is not trusted to pick a destination: a
`file:` URI or path (a host path of the server's choosing), `mlflow-artifacts://otherhost/`,
or any other store (s3:, gs:, ...) is refused; the run is logged without artifacts and the tag
`envd.artifacts` (and a warning in the log) says why. Replies are read with a bound, https
uses the host's CA bundle, and the tracking URI's credentials (`https://user:token@host`) go
in an Authorization header, never into a log line.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlencode, urlsplit

from envd.gateways import http
from envd.model.runrecord import RunRecord
from envd.model.safenames import UnsafeName, relative

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_REPLY = 4 << 20  # bytes of one JSON reply (runs/create and the like are tiny)
MAX_ERROR = 500  # bytes of an error reply kept for the message
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


def redact(uri: str) -> str:
    """`uri` without its userinfo (`https://user:token@host/` -> `https://***@host/`)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "(an unparsable URI)"
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in."""
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


class MlflowClient:
    def __init__(self, tracking_uri: str, timeout: float = TIMEOUT_S) -> None:
        parts = urlsplit(tracking_uri.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise MlflowError(
                f"tracking URI {redact(tracking_uri)} is not an http(s) URL of a server"
            )
        self._headers: dict[str, str] = {}
        if parts.username is not None or parts.password is not None:
            user = unquote(parts.username or "")
            secret = unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._origin = _origin(parts)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        self._server = parts._replace(netloc=netloc, query="", fragment="").geturl().rstrip("/")
        self._base = self._server + "/api/2.0/mlflow/"
        self._artifacts = self._server + "/api/2.0/mlflow-artifacts/artifacts/"
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
            url, data=data, method=method, headers={"Content-Type": content_type, **self._headers}
        )
        try:
            with http.open_url(request, timeout=self._timeout) as reply:
                payload = http.read_bounded(reply, MAX_REPLY)
        except http.BodyTooLarge:
            raise MlflowError(
                f"{method} {path}: the reply is over {MAX_REPLY} bytes; refused"
            ) from None
        except urllib.error.HTTPError as exc:
            detail = exc.read(MAX_ERROR).decode(errors="replace")
            raise MlflowError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MlflowError(f"{method} {path}: {exc}") from None
        try:
            result = json.loads(payload.decode() or "{}")
        except ValueError as exc:
            raise MlflowError(f"{method} {path}: the reply is not JSON ({exc})") from None
        if not isinstance(result, dict):
            raise MlflowError(f"{method} {path}: the reply is not a JSON object")
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
        """Put `content` at `name` under a run's artifact URI through the tracking server's
        artifact proxy; "" or why it was not (the URI comes from the server's reply: it may
        name only a path under that same server, never a host path or another host)."""
        shown = redact(artifact_uri)[:200]
        try:
            parsed = urlsplit(artifact_uri)
            port = parsed.port
        except ValueError:
            return f"artifact URI {shown} from the server is not a URI; not uploaded"
        scheme = parsed.scheme.lower()
        if scheme in ("", "file"):
            return (
                f"artifact URI {shown} from the server names a local path; envd uploads "
                "artifacts only through the tracking server's artifact proxy (start `mlflow "
                "server` with --artifacts-destination, the default)"
            )
        if scheme != "mlflow-artifacts":
            return (
                f"artifact store {parsed.scheme}: is not reachable over MLflow's REST API "
                "(start `mlflow server` with its artifact proxy, the default)"
            )
        if parsed.netloc:
            there = (self._origin[0], (parsed.hostname or "").lower(), port or self._origin[2])
            if there != self._origin:
                return (
                    f"artifact URI {shown} from the server names another host than the "
                    "tracking server; envd sends artifacts only to the tracking server"
                )
        try:
            path = relative(unquote(parsed.path).lstrip("/"), "MLflow's artifact URI").as_posix()
        except UnsafeName as exc:
            return f"{exc.message}; not uploaded"
        self._call("PUT", quote(f"{path}/{name}"), raw=content, base=self._artifacts)
        return ""

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
        try:
            info = created["run"]["info"]
            run_id = str(info["run_id"])
            artifact_uri = str(info.get("artifact_uri", ""))
        except (KeyError, TypeError, AttributeError):
            raise MlflowError("POST runs/create: the reply holds no run id") from None
        artifacts = {RECORD_ARTIFACT: run.to_json().encode() + b"\n"}
        if fingerprint:
            artifacts[FINGERPRINT_ARTIFACT] = fingerprint.encode()
        problem = ""
        for name, content in sorted(artifacts.items()):
            try:
                problem = self.upload(artifact_uri, name, content)
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
        log.info("run %s logged to MLflow %s as %s", run.id, redact(uri), mlflow_id)

    return sink
