"""Which engine envd talks to, and whose GPUs it reports: fakes only, no engine contacted."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.errors import EXIT_ENGINE, EngineUnavailable
from envd.gateways.engine import (
    Engine,
    EngineEndpoint,
    EngineInfo,
    RunResult,
    engine_is_remote,
    resolve_endpoint,
)
from envd.gateways.nvml import GPU_PROBE_SCRIPT, GpuReport, report_from_nvidia_smi
from envd.model.host import GpuDevice
from envd.services.host import HostProbe

H100 = GpuDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1234", 85_520_809_984, "9.0")


@pytest.mark.parametrize(
    ("host", "remote"),
    [
        ("unix:///var/run/docker.sock", False),
        ("http+unix:///var/run/docker.sock", False),
        ("tcp://127.0.0.1:2375", True),
        ("tcp://gpu1.example:2376", True),
        ("ssh://me@gpu1", True),
    ],
)
def test_only_a_local_socket_shares_our_files(host: str, remote: bool) -> None:
    assert engine_is_remote(host) is remote
    assert EngineEndpoint(host=host).remote is remote


def _context(config: Path, name: str, host: str) -> None:
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
            }
        )
    )


def test_docker_host_wins_over_contexts(tmp_path: Path) -> None:
    _context(tmp_path, "gpu1", "ssh://me@gpu1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gpu1"}))
    where = resolve_endpoint(
        {"DOCKER_HOST": "tcp://10.0.0.5:2375", "DOCKER_CONFIG": str(tmp_path), "HOME": "/x"}
    )
    assert (where.host, where.context, where.remote, where.error) == (
        "tcp://10.0.0.5:2375",
        "",
        True,
        "",
    )
    assert where.source == "DOCKER_HOST"


def test_docker_host_with_tls(tmp_path: Path) -> None:
    missing = resolve_endpoint(
        {"DOCKER_HOST": "tcp://gpu1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/no"}
    )
    assert "cannot use TLS for DOCKER_HOST=tcp://gpu1:2376" in missing.error
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    where = resolve_endpoint(
        {
            "DOCKER_HOST": "tcp://gpu1:2376",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(tmp_path),
        }
    )
    assert where.tls is not None
    assert where.tls.ca_cert == str(tmp_path / "ca.pem")
    assert where.tls.verify


def test_current_context_from_the_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _context(tmp_path, "gpu1", "ssh://me@gpu1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gpu1"}))
    where = resolve_endpoint({})
    assert (where.host, where.context, where.remote) == ("ssh://me@gpu1", "gpu1", True)
    assert where.source == "context gpu1"
    _context(tmp_path, "other", "tcp://other:2375")
    named = resolve_endpoint({"DOCKER_CONTEXT": "other"})  # DOCKER_CONTEXT beats config.json
    assert (named.host, named.context) == ("tcp://other:2375", "other")


def test_default_context_is_the_local_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    where = resolve_endpoint({})
    assert (where.host, where.context, where.remote) == (
        "unix:///var/run/docker.sock",
        "default",
        False,
    )


def test_an_unknown_context_is_a_clear_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONTEXT", "nowhere")
    engine = Engine()
    assert "'nowhere'" in engine.endpoint.error and "DOCKER_CONTEXT" in engine.endpoint.error
    with pytest.raises(EngineUnavailable) as caught:
        _ = engine.client
    assert caught.value.exit_code == EXIT_ENGINE
    assert "docker context ls" in caught.value.hint
    info = engine.info()
    assert not info.reachable and "is not known" in info.error
    assert info.context == "nowhere"


# ---------------------------------------------------------------- whose GPUs


@dataclass
class CountingNvml:
    """This machine's NVML, seeing one H100; counts reads."""

    reads: int = 0

    def read(self) -> GpuReport:
        self.reads += 1
        return GpuReport((H100,), "550.54.15", "12.4", "", "NVML on this machine")


@dataclass
class FakeRemoteEngine:
    """An engine on another machine: its runtimes, and what nvidia-smi prints there."""

    host: str = "tcp://gpu1:2376"
    runtimes: tuple[str, ...] = ("runc",)
    smi_output: str = ""
    remote: bool = True
    runs: list[dict[str, Any]] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> EngineEndpoint:
        return EngineEndpoint(host=self.host)

    def info(self) -> EngineInfo:
        return EngineInfo(
            reachable=True, runtimes=self.runtimes, host=self.host, remote=self.remote
        )

    def image_exists(self, ref: str) -> bool:
        return ref in self.pulled

    def pull(self, ref: str) -> None:
        self.pulled.append(ref)

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        device_requests: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> RunResult:
        self.runs.append({"image": image, "argv": list(argv), "devices": list(device_requests)})
        return RunResult(exit_code=0, output=self.smi_output)


def test_remote_engine_without_gpu_runtime_has_no_gpus_though_this_machine_has() -> None:
    nvml, engine = CountingNvml(), FakeRemoteEngine()
    host = HostProbe(lambda: nvml, engine).host  # type: ignore[arg-type]
    assert host.gpus == ()
    assert host.gpu_source == "the engine at tcp://gpu1:2376"
    assert host.gpu_error == (
        "no NVIDIA GPU: no GPU runtime on the engine at tcp://gpu1:2376 "
        "(neither the nvidia runtime nor CDI)"
    )
    assert nvml.reads == 0  # the local NVML is never read for a remote engine
    assert engine.runs == []  # nothing to probe without a runtime


def test_local_engine_reads_nvml_here() -> None:
    nvml, engine = CountingNvml(), FakeRemoteEngine(host="unix:///var/run/docker.sock")
    engine.remote = False
    host = HostProbe(lambda: nvml, engine).host  # type: ignore[arg-type]
    assert host.gpus == (H100,) and host.gpu_source == "NVML on this machine"
    assert nvml.reads == 1


SMI = (
    "0, NVIDIA H200, GPU-aaaa, 143771, 9.0, 570.86.15\n"
    "1, NVIDIA H200, GPU-bbbb, 143771, 9.0, 570.86.15\n"
    "CUDA Version: 12.8\n"
)


def test_remote_engine_with_nvidia_runtime_reports_its_gpus() -> None:
    engine = FakeRemoteEngine(runtimes=("nvidia", "runc"), smi_output=SMI)
    host = HostProbe(CountingNvml, engine).host  # type: ignore[arg-type]
    assert [(g.index, g.name, g.uuid) for g in host.gpus] == [
        (0, "NVIDIA H200", "GPU-aaaa"),
        (1, "NVIDIA H200", "GPU-bbbb"),
    ]
    assert host.gpus[0].memory_bytes == 143771 << 20
    assert host.gpus[0].compute_capability == "9.0"
    assert (host.driver_version, host.cuda_driver_version) == ("570.86.15", "12.8")
    assert host.gpu_error == "" and host.gpu_source == "the engine at tcp://gpu1:2376"
    (run,) = engine.runs
    assert run["argv"] == ["sh", "-c", GPU_PROBE_SCRIPT]
    assert run["devices"] == [
        {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}
    ]
    assert engine.pulled == [run["image"]]  # the probe image was missing: pulled first


def test_nvidia_smi_listing_none_says_so() -> None:
    report = report_from_nvidia_smi("No devices were found\n", "the engine at tcp://x:1")
    assert report.gpus == ()
    assert report.error.startswith("no NVIDIA GPU: nvidia-smi on the engine at tcp://x:1")
    assert "No devices were found" in report.error
