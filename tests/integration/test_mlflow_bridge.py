"""The MLflow bridge against a real `mlflow server` (SQLite) on 127.0.0.1.

Needs an `mlflow` executable: $ENVD_TEST_MLFLOW, else `mlflow` on PATH (envd itself does not
depend on the mlflow package: it speaks the REST API). Skipped without one.
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

from tests.conftest import Envctl, _envctl_env, stop_daemon

pytestmark = pytest.mark.integration

MLFLOW = os.environ.get("ENVD_TEST_MLFLOW") or shutil.which("mlflow")


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MLFLOW:
        pytest.skip("no mlflow executable (set ENVD_TEST_MLFLOW)")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            MLFLOW,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
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


def test_a_finished_run_is_logged_to_mlflow(server: str, runner: Envctl) -> None:
    runner.ok("config", "mlflow_tracking_uri", server)
    runner.ok("new", "mlf-demo", "--template", "default")
    params = runner.cwd / "mlf-demo" / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 200", "epochs: 20"))
    runner.ok("enter", "mlf-demo", "--", "python", "-m", "mlf_demo.train")
    run = json.loads(runner.ok("--json", "runs", "mlf-demo"))["runs"][0]

    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        experiments = api(server, "experiments/search", {"max_results": 100}).get("experiments", [])
        ids = [e["experiment_id"] for e in experiments if e["name"] == "mlf-demo"]
        if ids:
            found = api(
                server,
                "runs/search",
                {"experiment_ids": ids, "filter": f"tags.`envd.run_id` = '{run['id']}'"},
            ).get("runs", [])
        if not found:
            time.sleep(0.5)
    assert found, "the run never reached MLflow"
    data = found[0]["data"]
    tags = {t["key"]: t["value"] for t in data["tags"]}
    params_logged = {p["key"]: p["value"] for p in data["params"]}
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert found[0]["info"]["status"] == "FINISHED"
    assert tags["envd.environment_hash"] == run["environment_hash"]
    assert tags["envd.output.models/model.json"] == run["outputs"]["models/model.json"]
    assert params_logged["model.epochs"] == "20"
    assert metrics["train.accuracy"] == pytest.approx(run["metrics"]["train.accuracy"])
