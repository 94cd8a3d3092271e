"""Fingerprints, diffs, verification and run records on the real engine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration


def test_fingerprint_lists_every_package(shared: Envctl, default_project: Path) -> None:
    data = json.loads(shared.ok("fingerprint", str(default_project), "--json"))
    env = data["environment"]
    names = {p["name"]: p["version"] for p in env["python_packages"]}
    assert {"numpy", "pyyaml"} <= names.keys()
    assert all(p["detail"] for p in env["python_packages"] if p["name"] == "numpy")
    debs = {p["name"] for p in env["debian_packages"]}
    assert {"python3", "ca-certificates", "libc6"} <= debs
    assert env["env"] == {"PYTHONHASHSEED": "0"}
    assert data["environment_hash"].startswith("sha256:") and data["host_hash"]


def test_same_lock_rebuilt_from_scratch_gives_same_hash(shared: Envctl) -> None:
    # The watcher would rebuild the removed image in the background (it judges the envd.lock
    # the first build wrote a moment later): this test's `build` must be the one that builds.
    with shared.no_background_builds():
        _rebuilt_from_scratch(shared)


def _rebuilt_from_scratch(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "again")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - packaging"))

    def images() -> set[str]:
        return {i["image"] for i in json.loads(shared.ok("--json", "images"))["images"]}

    before = images()
    shared.ok("build", str(path))
    first = json.loads(shared.ok("fingerprint", str(path), "--json"))["environment_hash"]
    for image in images() - before:  # this project's own layers, removed behind envd's back
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=True)
    subprocess.run(
        ["docker", "volume", "rm", "-f", f"{shared.namespace}-uv-cache"], capture_output=True
    )
    shared.ok("gc")
    out = shared.ok("build", str(path))
    assert "built" in out and "packages" in out
    second = json.loads(shared.ok("fingerprint", str(path), "--json"))["environment_hash"]
    assert first == second


def test_diff_names_added_packages_and_file_round_trip(
    shared: Envctl, default_project: Path, tmp_path: Path
) -> None:
    grown = copy_template("default", shared.cwd / "grown")
    spec = (grown / "envd.yaml").read_text()
    (grown / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - six"))
    shared.ok("build", str(grown))
    proc = shared("diff", str(default_project), str(grown))
    assert proc.returncode == 1
    assert "python_packages (1: 1 added)" in proc.stdout and "+ six " in proc.stdout
    assert "host: identical" in proc.stdout
    saved = tmp_path / "env.fingerprint.json"
    shared.ok("fingerprint", str(default_project), "--output", str(saved))
    same = shared("diff", str(default_project), str(saved))
    assert same.returncode == 0 and "identical" in same.stdout


def test_verify_catches_a_change_made_by_hand(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "tampered")
    shared.ok("build", str(path))
    assert shared("verify", str(path)).returncode == 0
    # Using the environment is no change to it: the caller's user entry, Python's byte-code
    # cache and the changed folders above them are not reported.
    shared.ok("enter", str(path), "--", "python", "-c", "import yaml, numpy")
    ok = shared("verify", str(path))
    assert ok.returncode == 0 and "warm container" in ok.stdout, ok.stdout
    shared.ok("enter", str(path), "--", "python", "-m", "pip", "uninstall", "-y", "-q", "pyyaml")
    proc = shared("verify", str(path))
    assert proc.returncode == 9
    assert "pyyaml" in proc.stdout


def test_runs_record_status_and_commit(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "gitproj")
    git = ["git", "-C", str(path), "-c", "user.email=t@e", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    commit = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shared("enter", str(path), "--", "sh", "-c", "exit 3").returncode == 3
    runs = json.loads(shared.ok("--json", "runs", "--project", str(path)))["runs"]
    run = runs[0]
    assert run["exit_code"] == 3 and run["finished"] is True
    assert run["git_commit"] == commit and run["environment_hash"].startswith("sha256:")
    assert "exit status  3" in shared.ok("runs", "show", run["id"])
    fp = json.loads(shared.ok("fingerprint", f"run:{run['id']}", "--json"))
    assert fp["environment_hash"] == run["environment_hash"]


def test_info_without_a_gpu_and_with_a_recorded_report(shared: Envctl, tmp_path: Path) -> None:
    out = shared.ok("info")
    assert "gpus            none" in out
    report = tmp_path / "gpus.json"
    report.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": i,
                        "name": "NVIDIA H200",
                        "uuid": f"GPU-{i}",
                        "memory_bytes": 150_000_000_000,
                        "compute_capability": "9.0",
                    }
                    for i in range(2)
                ],
                "driver_version": "560.35.03",
                "cuda_driver_version": "12.6",
            }
        )
    )
    fake = Envctl(
        env={
            **shared.env,
            "ENVD_NVML_REPORT": str(report),
            "ENVD_HOME": str(tmp_path / "h"),
            "ENVD_SOCKET": str(tmp_path / "h/s"),
        },
        home=tmp_path / "h",
        cwd=tmp_path,
    )
    try:
        out = fake.ok("info")
        assert "NVIDIA H200" in out and "560.35.03" in out and "12.6" in out
        data = json.loads(fake.ok("info", "--json"))
        assert len(data["gpus"]) == 2
    finally:
        fake("daemon", "stop")
