"""The MLflow bridge: tags from a run, and where artifacts may go (a fake server on 127.0.0.1
plays a hostile tracking server)."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from envd.gateways.mlflow import MAX_REPLY, MlflowClient, MlflowError, mlflow_sink, tags_for
from envd.model.runrecord import CodeState, RunRecord
from tests.unit.gateways.test_http import certificate

COMMIT = "a" * 40
LOCK = "b" * 64


def record() -> RunRecord:
    return RunRecord(
        id="run1",
        project="demo",
        command=("python", "-m", "demo.train"),
        image="sha256:" + "c" * 64,
        environment_hash="sha256:env",
        host_hash="sha256:host",
        lock_sha256=LOCK,
        code=CodeState(commit=COMMIT),
        outputs={"models/model.json": "d" * 64},
    )


def test_tags_carry_envds_hashes_and_leave_out_empty_ones() -> None:
    tags = tags_for(record())
    assert tags["envd.environment_hash"] == "sha256:env"
    assert tags["envd.lock_sha256"] == LOCK
    assert tags["envd.image"] == "sha256:" + "c" * 64
    assert tags["envd.git_commit"] == tags["mlflow.source.git.commit"] == COMMIT
    assert tags["envd.output.models/model.json"] == "d" * 64
    assert "envd.diff_sha256" not in tags  # a clean tree has none


def test_a_local_artifact_root_named_by_the_server_is_refused(tmp_path: Path) -> None:
    client = MlflowClient("http://127.0.0.1:1")
    root = tmp_path / "mlruns" / "1" / "abc" / "artifacts"
    assert "local path" in client.upload(f"file://{root}", "envd/run.json", b"{}\n")
    assert "local path" in client.upload(str(root), "envd/fingerprint.json", b"fp")
    assert not (tmp_path / "mlruns").exists()


def test_an_artifact_store_out_of_reach_is_said_not_guessed() -> None:
    client = MlflowClient("http://127.0.0.1:1")
    problem = client.upload("s3://bucket/1/abc/artifacts", "envd/run.json", b"{}")
    assert "s3:" in problem and "artifact proxy" in problem
    assert "local path" in client.upload("mlruns/1", "envd/run.json", b"{}")


# ---------------------------------------------------------------- a fake tracking server


class FakeServer(ThreadingHTTPServer):
    artifact_uri = ""
    created_size = 0  # bytes of padding in the runs/create reply
    requests: list[tuple[str, str, dict[str, str]]]


class Handler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, body: dict[str, Any], code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path, dict(self.headers)))
        if "experiments/get-by-name" in self.path:
            self._reply({"experiment": {"experiment_id": "7"}})
        elif self.path.endswith("runs/create"):
            info = {"run_id": "r1", "artifact_uri": self.server.artifact_uri}
            self._reply({"run": {"info": info}, "padding": "x" * self.server.created_size})
        else:
            self._reply({})

    do_GET = do_POST = do_PUT = _handle


def serve(tls: ssl.SSLContext | None = None) -> FakeServer:
    server = FakeServer(("127.0.0.1", 0), Handler)
    server.requests = []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def tracking() -> Iterator[FakeServer]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[FakeServer]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


def uri(server: FakeServer, userinfo: str = "") -> str:
    return f"http://{userinfo}127.0.0.1:{server.server_address[1]}"


def finished(client: MlflowClient) -> str:
    return client.log_run(record(), '{"fingerprint": 1}')


def logged_tags(server: FakeServer) -> str:
    return " ".join(path for method, path, _ in server.requests if method == "POST")


def test_a_file_artifact_uri_from_the_server_writes_nothing_and_the_run_is_logged(
    tracking: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "f11"
    tracking.artifact_uri = f"file://{target}"
    with caplog.at_level(logging.WARNING, "envd.gateways.mlflow"):
        assert finished(MlflowClient(uri(tracking))) == "r1"
    assert not target.exists()
    assert "local path" in caplog.text
    paths = [path for _, path, _ in tracking.requests]
    assert not any("mlflow-artifacts" in p for p in paths)
    assert any(p.endswith("runs/log-batch") for p in paths)
    assert any(p.endswith("runs/update") for p in paths)


def test_an_artifact_uri_on_another_host_sends_nothing_there(
    tracking: FakeServer, elsewhere: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    other = elsewhere.server_address[1]
    tracking.artifact_uri = f"mlflow-artifacts://localhost:{other}/1/r1/artifacts"
    with caplog.at_level(logging.WARNING, "envd.gateways.mlflow"):
        assert finished(MlflowClient(uri(tracking))) == "r1"
    assert elsewhere.requests == []
    assert "another host" in caplog.text
    assert not any(method == "PUT" for method, _, _ in tracking.requests)


def test_artifacts_go_through_the_tracking_servers_own_proxy(tracking: FakeServer) -> None:
    port = tracking.server_address[1]
    for artifact_uri in ("mlflow-artifacts:/1/r1/artifacts",
                         f"mlflow-artifacts://127.0.0.1:{port}/1/r1/artifacts"):  # fmt: skip
        tracking.requests.clear()
        tracking.artifact_uri = artifact_uri
        finished(MlflowClient(uri(tracking)))
        puts = sorted(path for method, path, _ in tracking.requests if method == "PUT")
        assert puts == [
            "/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/envd/fingerprint.json",
            "/api/2.0/mlflow-artifacts/artifacts/1/r1/artifacts/envd/run.json",
        ]


def test_an_artifact_path_climbing_out_is_refused(tracking: FakeServer) -> None:
    tracking.artifact_uri = "mlflow-artifacts:/1/../../../etc"
    finished(MlflowClient(uri(tracking)))
    assert not any(method == "PUT" for method, _, _ in tracking.requests)


def test_credentials_in_the_tracking_uri_are_sent_as_a_header_and_never_logged(
    tracking: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    tracking.artifact_uri = "mlflow-artifacts:/1/r1/artifacts"
    sink = mlflow_sink(lambda: uri(tracking, "alice:s3cret@"))
    with caplog.at_level(logging.DEBUG):
        sink(record())
    assert "s3cret" not in caplog.text and "alice" not in caplog.text
    assert "***@127.0.0.1" in caplog.text
    assert all(h.get("Authorization") == "Basic YWxpY2U6czNjcmV0" for _, _, h in tracking.requests)


def test_an_oversized_reply_is_refused(
    tracking: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("envd.gateways.mlflow.MAX_REPLY", 10)
    with pytest.raises(MlflowError, match="over 10 bytes"):
        finished(MlflowClient(uri(tracking)))


def test_a_reply_over_the_named_limit_is_refused_with_the_call_it_answered(
    tracking: FakeServer,
) -> None:
    tracking.created_size = MAX_REPLY + (1 << 20)
    with pytest.raises(MlflowError) as info:
        finished(MlflowClient(uri(tracking)))
    assert str(info.value) == f"POST runs/create: the reply is over {MAX_REPLY} bytes; refused"
    assert not any(path.endswith("runs/log-batch") for _, path, _ in tracking.requests)


def test_an_https_tracking_server_is_trusted_through_the_host_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate(tmp_path, "tracking")
    other, _ = certificate(tmp_path, "other")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = serve(context)
    try:
        address = f"https://127.0.0.1:{server.server_address[1]}"
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
        with pytest.raises(MlflowError, match="CERTIFICATE_VERIFY_FAILED"):
            finished(MlflowClient(address))
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert finished(MlflowClient(address)) == "r1"
    finally:
        server.shutdown()
        server.server_close()
