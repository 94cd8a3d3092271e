"""The NVML gateway, driven through a fake pynvml module: no GPU is needed."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from envd.gateways.nvml import (
    GpuReport,
    Nvml,
    NvmlGateway,
    RecordedGpus,
    cuda_version_text,
    nvml_from_env,
)
from envd.model.host import GpuDevice
from tests.fakes import nvml as fake
from tests.fakes.nvml import H100, FakeGpu, FakeNvml, FakePynvml


def read(module: FakePynvml) -> GpuReport:
    return NvmlGateway(module_loader=lambda: module).read()


# ---------------------------------------------------------------- no GPU: a report, never a raise


def test_no_library_installed() -> None:
    def missing() -> FakePynvml:
        raise ImportError("No module named 'pynvml'")

    report = NvmlGateway(module_loader=missing).read()
    assert report.gpus == ()
    assert report.error.startswith("no NVIDIA GPU: ")
    assert "nvidia-ml-py is not installed" in report.error


def test_no_driver_library() -> None:
    module = FakePynvml(gpus=[H100], init_error=fake.LIBRARY_NOT_FOUND)
    report = read(module)
    assert report.gpus == () and report.driver_version == ""
    assert report.error.startswith("no NVIDIA GPU: ")
    assert "the NVIDIA driver is not installed" in report.error
    assert "NVML Shared Library Not Found" in report.error
    assert module.shutdowns == 0  # nothing was started


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (fake.DRIVER_NOT_LOADED, "the NVIDIA kernel driver is not loaded"),
        (fake.NO_PERMISSION, "no permission"),
        (fake.LIB_RM_VERSION_MISMATCH, "reboot after a driver upgrade"),
        (fake.UNKNOWN, "NVML could not start"),
    ],
)
def test_no_driver_says_why(code: int, reason: str) -> None:
    report = read(FakePynvml(gpus=[H100], init_error=code))
    assert report.gpus == ()
    assert report.error.startswith("no NVIDIA GPU: ") and reason in report.error


def test_driver_without_devices() -> None:
    module = FakePynvml(gpus=[])
    report = read(module)
    assert report.gpus == () and report.driver_version == "550.54.15"
    assert report.error == "no NVIDIA GPU: the driver is loaded but NVML lists no devices"
    assert module.shutdowns == 1


# ---------------------------------------------------------------- GPUs


def test_one_h100() -> None:
    module = FakePynvml(gpus=[H100], driver=b"550.54.15", cuda=12040)
    report = read(module)
    assert report == GpuReport(
        gpus=(
            GpuDevice(
                index=0,
                name="NVIDIA H100 80GB HBM3",
                uuid=H100.uuid,
                memory_bytes=85_520_809_984,
                compute_capability="9.0",
            ),
        ),
        driver_version="550.54.15",
        cuda_driver_version="12.4",
        error="",
        source="NVML on this machine",
    )
    assert (module.inits, module.shutdowns) == (1, 1)


def test_eight_mixed_gpus() -> None:
    module = FakePynvml(gpus=fake.eight_mixed(), driver="570.124.06", cuda=12080)
    report = read(module)
    assert report.error == ""
    assert [g.index for g in report.gpus] == list(range(8))
    assert [g.compute_capability for g in report.gpus] == [
        "9.0", "9.0", "8.0", "8.0", "8.9", "8.9", "7.5", "7.5",
    ]  # fmt: skip
    assert report.gpus[4].name == "NVIDIA L4"
    assert len({g.uuid for g in report.gpus}) == 8
    assert report.cuda_driver_version == "12.8"


def test_memory_not_supported_keeps_the_gpu() -> None:
    unified = FakeGpu("NVIDIA GB10", 0, (12, 1), memory_error=fake.NOT_SUPPORTED)
    report = read(FakePynvml(gpus=[unified]))
    assert [(g.name, g.memory_bytes, g.compute_capability) for g in report.gpus] == [
        ("NVIDIA GB10", 0, "12.1")
    ]
    assert report.error == ""


# ---------------------------------------------------------------- errors mid-query


def test_lost_gpu_mid_query_keeps_the_others() -> None:
    gpus = fake.eight_mixed()[:3]
    gpus[1].lost = True
    module = FakePynvml(gpus=gpus)
    report = read(module)
    assert [g.index for g in report.gpus] == [0, 2]  # NVML's own indexes, as --gpus uses them
    assert report.error == "NVML failed reading GPU 1: GPU is lost"
    assert report.driver_version == "550.54.15"
    assert module.shutdowns == 1


def test_memory_error_drops_only_that_gpu() -> None:
    gpus = fake.eight_mixed()[:2]
    gpus[0].memory_error = fake.UNKNOWN
    report = read(FakePynvml(gpus=gpus))
    assert [g.index for g in report.gpus] == [1]
    assert "GPU 0: Unknown Error" in report.error


def test_count_fails_mid_query() -> None:
    module = FakePynvml(gpus=[H100], count_error=fake.UNKNOWN)
    report = read(module)
    assert report.gpus == ()
    assert report.error == "no NVIDIA GPU: NVML failed reading GPU count: Unknown Error"
    assert report.driver_version == "550.54.15" and report.cuda_driver_version == "12.4"
    assert module.shutdowns == 1


def test_driver_version_fails_but_gpus_are_read() -> None:
    report = read(FakePynvml(gpus=[H100], driver_error=fake.UNKNOWN))
    assert len(report.gpus) == 1 and report.driver_version == ""
    assert report.error == "NVML failed reading driver version: Unknown Error"


def test_a_binding_bug_is_reported_not_raised() -> None:
    class Broken(FakePynvml):
        def nvmlDeviceGetCount(self) -> int:
            raise RuntimeError("boom")

    module = Broken(gpus=[H100])
    report = read(module)
    assert report.gpus == ()
    assert report.error == "no NVIDIA GPU: NVML failed unexpectedly (RuntimeError: boom)"
    assert module.shutdowns == 1


@pytest.mark.parametrize(
    ("code", "text"), [(11080, "11.8"), (12040, "12.4"), (12090, "12.9"), (13000, "13.0")]
)
def test_cuda_version_text(code: int, text: str) -> None:
    assert cuda_version_text(code) == text


# ---------------------------------------------------------------- the real library, here


def test_real_nvml_on_this_machine_reports_instead_of_raising() -> None:
    report = NvmlGateway().read()
    if report.gpus:  # a GPU machine: the driver answered
        assert report.driver_version and report.cuda_driver_version
    else:
        assert report.error.startswith("no NVIDIA GPU: ")
        assert report.driver_version == ""


# ---------------------------------------------------------------- recorded reports and fakes


def test_recorded_report(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    device = GpuDevice(0, "NVIDIA H200", "GPU-1", 150_754_820_096, "9.0")
    recorded = {
        "gpus": [asdict(device)],
        "driver_version": "560.35.03",
        "cuda_driver_version": "12.6",
    }
    path.write_text(json.dumps(recorded))
    report = RecordedGpus(str(path)).read()
    assert report.gpus == (device,)
    assert (report.driver_version, report.cuda_driver_version) == ("560.35.03", "12.6")


@pytest.mark.parametrize("content", [None, "not json", '{"gpus": [{"model": "x"}]}', "[1]"])
def test_unreadable_recorded_report(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "gpus.json"
    if content is not None:
        path.write_text(content)
    report = RecordedGpus(str(path)).read()
    assert report.gpus == () and "cannot read the recorded GPU report" in report.error


def test_nvml_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ENVD_NVML_REPORT", raising=False)
    assert isinstance(nvml_from_env(), NvmlGateway)
    monkeypatch.setenv("ENVD_NVML_REPORT", str(tmp_path / "gpus.json"))
    assert nvml_from_env() == RecordedGpus(str(tmp_path / "gpus.json"))


def test_fake_nvml_has_the_gateway_interface() -> None:
    source: Nvml = FakeNvml.gpu_host(H100, driver="535.104.05", cuda="12.2")
    report = source.read()
    assert report.gpus[0].compute_capability == "9.0" and report.driver_version == "535.104.05"
    assert FakeNvml.cpu_host().read().error.startswith("no NVIDIA GPU: ")
