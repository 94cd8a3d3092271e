"""The MLflow bridge's pure parts: tags from a run, and where artifacts can go (no server)."""

from __future__ import annotations

from pathlib import Path

from envd.gateways.mlflow import MlflowClient, tags_for
from envd.model.runrecord import CodeState, RunRecord

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


def test_artifacts_go_to_a_local_artifact_root(tmp_path: Path) -> None:
    client = MlflowClient("http://127.0.0.1:1")
    root = tmp_path / "mlruns" / "1" / "abc" / "artifacts"
    assert client.upload(f"file://{root}", "envd/run.json", b"{}\n") == ""
    assert (root / "envd" / "run.json").read_bytes() == b"{}\n"
    assert client.upload(str(root), "envd/fingerprint.json", b"fp") == ""
    assert (root / "envd" / "fingerprint.json").read_bytes() == b"fp"


def test_an_artifact_store_out_of_reach_is_said_not_guessed() -> None:
    client = MlflowClient("http://127.0.0.1:1")
    problem = client.upload("s3://bucket/1/abc/artifacts", "envd/run.json", b"{}")
    assert "s3:" in problem and "artifact proxy" in problem
    assert "not an absolute path" in client.upload("mlruns/1", "envd/run.json", b"{}")
