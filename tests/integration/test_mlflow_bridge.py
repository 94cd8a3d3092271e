"""The MLflow bridge against a real `mlflow server` (SQLite, artifact proxy) on 127.0.0.1.

The server is `make setup`'s .venv-mlflow (scripts/mlflow-server.txt), else $ENVD_TEST_MLFLOW,
else `mlflow` on PATH; envd itself does not depend on the mlflow package (it speaks the REST
API). Without one the test is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Envctl, _envctl_env, stop_daemon

pytestmark = pytest.mark.integration


def mlflow_executable() -> str | None:
    venv = ROOT / ".venv-mlflow" / "bin" / "mlflow"
    if venv.is_file() and os.access(venv, os.X_OK):
        return str(venv)
    return os.environ.get("ENVD_TEST_MLFLOW") or shutil.which("mlflow")


MLFLOW = mlflow_executable()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        result: dict[str, Any] = json.loads(reply.read().decode() or "{}")
        return result


def artifact(base: str, artifact_uri: str, name: str) -> bytes:
    """A run's artifact, read back through the server's artifact proxy."""
    assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
    path = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    url = f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}/{name}"
    with urllib.request.urlopen(url, timeout=10) as reply:
        content: bytes = reply.read()
        return content


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MLFLOW:
        message = "no mlflow executable: `make setup` installs one in .venv-mlflow"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((root / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def runner(tmp_path: Path, engine: None) -> Iterator[Envctl]:
    home = tmp_path / "home"
    home.mkdir()
    envctl = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    yield envctl
    envctl("stop", "--all", timeout=60)
    stop_daemon(envctl)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_finished_run_is_logged_to_mlflow(server: str, runner: Envctl) -> None:
    runner.ok("config", "mlflow_tracking_uri", server)
    runner.ok("new", "mlf-demo", "--template", "default")
    project = runner.cwd / "mlf-demo"
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 200", "epochs: 20"))
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "start")
    commit = git(project, "rev-parse", "HEAD")
    runner.ok("enter", "mlf-demo", "--", "python", "-m", "mlf_demo.train")
    run_id = json.loads(runner.ok("--json", "runs", "mlf-demo"))["runs"][0]["id"]
    run = json.loads(runner.ok("--json", "runs", "show", run_id))

    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        experiments = api(server, "experiments/search", {"max_results": 100}).get("experiments", [])
        ids = [e["experiment_id"] for e in experiments if e["name"] == "mlf-demo"]
        if ids:
            found = api(
                server,
                "runs/search",
                {"experiment_ids": ids, "filter": f"tags.`envd.run_id` = '{run['id']}'"},
            ).get("runs", [])
        if found and found[0]["info"]["status"] == "FINISHED":
            break
        time.sleep(0.5)
    assert found, "the run never reached MLflow"
    info, data = found[0]["info"], found[0]["data"]
    tags = {t["key"]: t["value"] for t in data["tags"]}
    params_logged = {p["key"]: p["value"] for p in data["params"]}
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert info["status"] == "FINISHED"
    assert info["run_name"] == run["id"]
    # envd's provenance as tags: environment, lock, image, code
    assert tags["envd.environment_hash"] == run["environment_hash"] != ""
    assert tags["envd.host_hash"] == run["host_hash"] != ""
    assert tags["envd.lock_sha256"] == run["lock_sha256"] != ""
    assert tags["envd.image"] == run["image_id"]
    assert tags["envd.image"].startswith("sha256:")
    assert tags["envd.git_commit"] == commit == tags["mlflow.source.git.commit"]
    assert tags["envd.git_dirty"] == "false"
    assert tags["envd.output.models/model.json"] == run["outputs"]["models/model.json"]
    assert params_logged["model.epochs"] == "20"
    assert metrics["train.accuracy"] == pytest.approx(run["metrics"]["train.accuracy"])
    assert tags["envd.artifacts"] == "envd/fingerprint.json, envd/run.json"

    # the environment's fingerprint and the run record as artifacts
    fingerprint_file = project / "fingerprint.json"
    runner.ok("fingerprint", "mlf-demo", "-o", str(fingerprint_file))
    logged = json.loads(artifact(server, info["artifact_uri"], "envd/fingerprint.json"))
    assert logged == json.loads(fingerprint_file.read_text())
    record = json.loads(artifact(server, info["artifact_uri"], "envd/run.json"))
    assert record["id"] == run["id"]
    assert record["outputs"] == run["outputs"]
