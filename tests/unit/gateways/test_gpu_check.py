"""scripts/gpu_check.py, the device check, driven through the fake pynvml: no GPU is needed.

Each scenario runs the script's `main` with a fake pynvml handed in (as test_nvml.py hands one to
NvmlGateway), then reads the JSON it wrote, and feeds the replay file it wrote back through
ENVD_NVML_REPORT to check it gives the same HostInfo.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from envd.gateways.machine import detect_host
from envd.gateways.nvml import NvmlGateway, RecordedGpus, nvml_from_env
from envd.model.cuda import min_driver_for_cuda
from envd.model.fingerprint import HostGpu, HostSection, section_hash
from tests.fakes import nvml as fake
from tests.fakes.nvml import H100, FakePynvml

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def run(tmp_path: Path, module: object, *args: str) -> dict[str, Any]:
    def loader() -> Any:
        if isinstance(module, BaseException):
            raise module
        return module

    out = tmp_path / "out"
    rc = gpu_check.main(["--out", str(out), *(args or ("--no-docker",))], module_loader=loader)
    assert rc == 0
    data: dict[str, Any] = json.loads((out / "gpu_check.json").read_text())
    return data


def replayed_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """HostInfo read through ENVD_NVML_REPORT from the replay file, as the JSON holds it."""
    monkeypatch.setenv("ENVD_NVML_REPORT", str(tmp_path / "out" / "nvml-report.json"))
    source = nvml_from_env()
    assert isinstance(source, RecordedGpus)
    host: dict[str, Any] = json.loads(json.dumps(asdict(detect_host(source))))
    return host


def outcome(check: dict[str, Any]) -> tuple[str, str, int | None]:
    return check["outcome"], check.get("class", ""), check.get("exit_code")


# ---------------------------------------------------------------- no library, no driver


def test_no_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = run(tmp_path, ImportError("No module named 'pynvml'"))
    assert data["raw_nvml"]["import_error"]["type"] == "ImportError"
    assert "nvidia-ml-py is not installed" in data["gateway_report"]["error"]
    assert data["gateway_report"]["gpus"] == []
    host = data["host_info"]
    assert host["gpus"] == [] and host["driver_version"] == ""
    assert host["gpu_error"] == data["gateway_report"]["error"]
    checks = data["checks"]
    assert outcome(checks["gpu_required"]) == ("error", "HostRequirementError", 7)
    assert "nvidia-ml-py is not installed" in checks["gpu_required"]["message"]
    assert checks["cuda"] == {"skipped": "NVML gave no CUDA driver version"}
    floor = checks["template_driver_floor"]
    assert floor["cuda"] == "12.4" and floor["min_driver"] == min_driver_for_cuda("12.4")
    assert outcome(floor) == ("ok", "", 0)  # no GPU: the lock's driver floor is not checked
    assert data["host_fingerprint"]["section"]["gpus"] == []
    assert data["replay"] == {
        "file": "nvml-report.json",
        "report_matches": True,
        "host_info_matches": True,
    }
    assert replayed_host(tmp_path, monkeypatch) == host


def test_no_driver_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = FakePynvml(gpus=[H100], init_error=fake.LIBRARY_NOT_FOUND)
    data = run(tmp_path, module)
    init = data["raw_nvml"]["init"]["error"]
    assert init == {"type": "NVMLError", "message": "NVML Shared Library Not Found", "code": 12}
    assert "devices" not in data["raw_nvml"]
    assert "the NVIDIA driver is not installed" in data["host_info"]["gpu_error"]
    assert outcome(data["checks"]["gpu_required_with_runtime"])[0] == "error"
    assert replayed_host(tmp_path, monkeypatch) == data["host_info"]


# ---------------------------------------------------------------- one GPU


def test_one_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = FakePynvml(gpus=[H100], driver=b"550.54.15", cuda=12040)
    data = run(tmp_path, module)
    raw = data["raw_nvml"]
    assert raw["system"]["nvmlSystemGetDriverVersion"] == {"value": "550.54.15"}
    assert raw["system"]["nvmlSystemGetCudaDriverVersion"] == {"value": 12040}
    # The fake has no _v2 or MIG call: recorded as errors, not a crash.
    assert raw["system"]["nvmlSystemGetCudaDriverVersion_v2"]["error"]["type"] == "AttributeError"
    assert raw["count"] == {"value": 1}
    (device,) = raw["devices"]
    assert device["nvmlDeviceGetName"] == {"value": "NVIDIA H100 80GB HBM3"}
    assert device["nvmlDeviceGetUUID"] == {"value": H100.uuid}
    assert device["nvmlDeviceGetMemoryInfo"]["value"]["total"] == H100.memory_bytes
    assert device["nvmlDeviceGetCudaComputeCapability"] == {"value": [9, 0]}
    assert device["nvmlDeviceGetMigMode"]["error"]["type"] == "AttributeError"
    assert raw["shutdown"] == {"value": None}
    assert module.inits == module.shutdowns == 2  # the raw pass, then the gateway's own

    host = data["host_info"]
    assert host["gpus"] == [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": H100.uuid,
            "memory_bytes": H100.memory_bytes,
            "compute_capability": "9.0",
        }
    ]
    assert (host["driver_version"], host["cuda_driver_version"]) == ("550.54.15", "12.4")
    assert host["gpu_error"] == ""

    fp = data["host_fingerprint"]
    section = fp["section"]
    assert section["gpus"] == [
        {
            "model": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0",
            "memory_bytes": 85_520_809_984,
        }
    ]
    assert section["engine_version"] == ""  # --no-docker: no engine asked
    rebuilt = HostSection(**{**section, "gpus": tuple(HostGpu(**g) for g in section["gpus"])})
    assert fp["hash"] == section_hash(rebuilt)
    assert fp["hash"] != section_hash(HostSection(**{**asdict(rebuilt), "driver_version": "1"}))

    checks = data["checks"]
    assert checks["nvidia_runtime_given"] is False
    assert outcome(checks["gpu_required"]) == ("error", "HostRequirementError", 7)
    assert "no `nvidia` runtime" in checks["gpu_required"]["message"]
    assert outcome(checks["gpu_required_with_runtime"]) == ("ok", "", 0)
    cuda = checks["cuda"]
    assert {k: v["cuda"] for k, v in cuda.items()} == {
        "at_driver": "12.4",
        "minor_above": "12.5",
        "major_above": "13.0",
        "minor_below": "12.3",
    }
    assert outcome(cuda["at_driver"]) == ("ok", "", 0)
    assert outcome(cuda["minor_below"]) == ("ok", "", 0)
    for above in ("minor_above", "major_above"):
        assert outcome(cuda[above]) == ("error", "HostRequirementError", 7)
        assert "supports CUDA 12.4 at most" in cuda[above]["message"]
    assert all(v["as_expected"] for v in cuda.values())
    floor = checks["template_driver_floor"]
    assert (floor["min_driver"], floor["driver"]) == ("550.54.14", "550.54.15")
    assert outcome(floor) == ("ok", "", 0)

    assert data["replay"]["report_matches"] and data["replay"]["host_info_matches"]
    replay = json.loads((tmp_path / "out" / "nvml-report.json").read_text())
    assert replay == data["gateway_report"]
    assert replayed_host(tmp_path, monkeypatch) == host


def test_old_driver_fails_the_template_floor(tmp_path: Path) -> None:
    data = run(tmp_path, FakePynvml(gpus=[H100], driver="535.104.05", cuda=12020))
    floor = data["checks"]["template_driver_floor"]
    assert outcome(floor) == ("error", "HostRequirementError", 7)
    assert "needs NVIDIA driver 550.54.14 or newer" in floor["message"]
    cuda = data["checks"]["cuda"]
    assert (cuda["at_driver"]["cuda"], cuda["minor_below"]["cuda"]) == ("12.2", "12.1")
    assert outcome(cuda["at_driver"])[0] == "ok"


def test_cuda_x_0_driver(tmp_path: Path) -> None:
    """A CUDA 13.0 driver (the H200 machines' 580 series): below is 12.9, above is 14.0."""
    data = run(tmp_path, FakePynvml(gpus=[H100], driver="580.159.03", cuda=13000))
    cuda = data["checks"]["cuda"]
    assert cuda["minor_below"]["cuda"] == "12.9" and outcome(cuda["minor_below"])[0] == "ok"
    assert outcome(cuda["minor_above"]) == ("error", "HostRequirementError", 7)
    major = cuda["major_above"]
    assert major["cuda"] == "14.0" and major["outcome"] == "error"
    # envd knows no driver for CUDA 14, so the refusal may come from min_driver_for_cuda.
    assert major["class"] == "HostRequirementError" and major["as_expected"]


# ---------------------------------------------------------------- eight GPUs


def test_eight_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = run(tmp_path, FakePynvml(gpus=fake.eight_mixed(), driver="570.124.06", cuda=12080))
    raw = data["raw_nvml"]
    assert raw["count"] == {"value": 8} and len(raw["devices"]) == 8
    assert [d["nvmlDeviceGetCudaComputeCapability"]["value"] for d in raw["devices"]] == [
        [9, 0], [9, 0], [8, 0], [8, 0], [8, 9], [8, 9], [7, 5], [7, 5],
    ]  # fmt: skip
    host = data["host_info"]
    assert [g["index"] for g in host["gpus"]] == list(range(8))
    assert len({g["uuid"] for g in host["gpus"]}) == 8
    assert [g["model"] for g in data["host_fingerprint"]["section"]["gpus"]] == [
        g["name"] for g in host["gpus"]
    ]
    cuda = data["checks"]["cuda"]
    assert (cuda["minor_above"]["cuda"], cuda["minor_below"]["cuda"]) == ("12.9", "12.7")
    assert all(v["as_expected"] for v in cuda.values())
    assert outcome(data["checks"]["gpu_required_with_runtime"]) == ("ok", "", 0)
    assert replayed_host(tmp_path, monkeypatch) == host


# ---------------------------------------------------------------- errors mid-query


def test_lost_gpu_mid_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = fake.eight_mixed()[:3]
    gpus[1].lost = True
    data = run(tmp_path, FakePynvml(gpus=gpus))
    devices = data["raw_nvml"]["devices"]
    assert devices[1] == {
        "index": 1,
        "handle_error": {"type": "NVMLError", "message": "GPU is lost", "code": fake.GPU_IS_LOST},
    }
    assert devices[2]["nvmlDeviceGetName"] == {"value": gpus[2].name}
    host = data["host_info"]
    assert [g["index"] for g in host["gpus"]] == [0, 2]
    assert host["gpu_error"] == "NVML failed reading GPU 1: GPU is lost"
    replay = json.loads((tmp_path / "out" / "nvml-report.json").read_text())
    assert replay["error"] == host["gpu_error"]
    assert replayed_host(tmp_path, monkeypatch) == host


def test_count_fails_mid_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = run(tmp_path, FakePynvml(gpus=[H100], count_error=fake.UNKNOWN))
    assert data["raw_nvml"]["count"]["error"]["code"] == fake.UNKNOWN
    assert data["raw_nvml"]["devices"] == []
    host = data["host_info"]
    assert host["gpus"] == [] and host["cuda_driver_version"] == "12.4"
    checks = data["checks"]
    assert "GPU count: Unknown Error" in checks["gpu_required"]["message"]
    assert outcome(checks["cuda"]["minor_above"]) == ("ok", "", 0)  # no GPU: CUDA not checked
    assert replayed_host(tmp_path, monkeypatch) == host


def test_a_binding_bug_is_recorded_not_raised(tmp_path: Path) -> None:
    class Broken(FakePynvml):
        def nvmlDeviceGetName(self, handle: int) -> bytes:
            raise RuntimeError("boom")

    data = run(tmp_path, Broken(gpus=[H100]))
    name = data["raw_nvml"]["devices"][0]["nvmlDeviceGetName"]
    assert name == {"error": {"type": "RuntimeError", "message": "boom"}}
    assert "NVML failed unexpectedly (RuntimeError: boom)" in data["host_info"]["gpu_error"]


def test_a_failing_section_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise ValueError("checks broke")

    monkeypatch.setattr(gpu_check, "checks", broken)
    data = run(tmp_path, FakePynvml(gpus=[H100]))
    assert data["checks"]["section_error"] == {"type": "ValueError", "message": "checks broke"}
    assert len(data["host_info"]["gpus"]) == 1  # the other sections still ran


# ---------------------------------------------------------------- docker


def test_no_docker_cli(tmp_path: Path) -> None:
    data = run(tmp_path, FakePynvml(gpus=[H100]), "--docker", str(tmp_path / "no-docker"))
    assert data["docker"]["skipped"].startswith("no `")
    assert data["checks"]["nvidia_runtime_given"] is False


FAKE_DOCKER = """#!/bin/sh
case "$1" in
  info) echo '{"ServerVersion": "27.1.1", "Runtimes": {"runc": {}, "nvidia": {}}}' ;;
  images) printf '<none>:<none>\\nbusybox:latest\\n' ;;
  run) echo "$@" > "$(dirname "$0")/run-args"; echo "GPU 0: NVIDIA H100 (UUID: GPU-1)" ;;
esac
"""


def test_gpu_container_with_the_nvidia_runtime(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    data = run(tmp_path, FakePynvml(gpus=[H100]), "--docker", str(docker))
    section = data["docker"]
    assert section["runtimes"] == ["nvidia", "runc"] and section["image"] == "busybox:latest"
    assert section["run"]["rc"] == 0 and "GPU 0: NVIDIA H100" in section["run"]["stdout"]
    args = (tmp_path / "run-args").read_text().split()
    assert args[:4] == ["run", "--rm", "--gpus", "all"] and args[-2:] == ["busybox:latest", "-L"]
    assert data["host_fingerprint"]["section"]["engine_version"] == "27.1.1"
    assert data["checks"]["nvidia_runtime_given"] is True
    assert outcome(data["checks"]["gpu_required"]) == ("ok", "", 0)


# ---------------------------------------------------------------- the real library and the .sh


def test_shell_script_with_the_real_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,
        "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels"),
        "GPU_CHECK_TIMEOUT": "120",
    }
    env.pop("ENVD_NVML_REPORT", None)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--no-docker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json",
        "gpu_check.log",
        "nvidia-smi.txt",
        "nvml-report.json",
    ]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["gateway_report"] == gpu_check.replay_dict(NvmlGateway().read())
    assert data["replay"]["report_matches"] and data["replay"]["host_info_matches"]
    assert replayed_host(tmp_path, monkeypatch) == data["host_info"]


def test_ctypes_answers_become_json() -> None:
    """The real pynvml answers with ctypes structures (memory, PCI info): their fields are kept."""
    import ctypes

    class Memory(ctypes.Structure):
        _fields_ = [
            ("total", ctypes.c_ulonglong),
            ("free", ctypes.c_ulonglong),
            ("used", ctypes.c_ulonglong),
        ]

    class Pci(ctypes.Structure):
        _fields_ = [("busId", ctypes.c_char * 16), ("domain", ctypes.c_uint)]

    assert gpu_check._jsonable(Memory(150, 100, 50)) == {"total": 150, "free": 100, "used": 50}
    assert gpu_check._jsonable(Pci(b"00000000:01:00.0", 0)) == {
        "busId": "00000000:01:00.0",
        "domain": 0,
    }
    assert gpu_check._jsonable([b"x", (1, 2)]) == ["x", [1, 2]]
    assert isinstance(gpu_check._jsonable(object()), str)


# ---------------------------------------------------------------- recorded fixtures


FIXTURES = sorted((REPO / "tests" / "fixtures").glob("nvml-*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.name for p in FIXTURES])
def test_recorded_fixture_replays(path: Path) -> None:
    """A replay file gpu_check wrote on a real GPU machine reads back as it was written."""
    written = json.loads(path.read_text())
    assert sorted(written) == ["cuda_driver_version", "driver_version", "error", "gpus"]
    report = RecordedGpus(str(path)).read()
    assert "cannot read the recorded GPU report" not in report.error
    assert gpu_check.replay_dict(report) == written
