"""GPU detection through a fake NVML, and the checks made before anything is built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envd.cuda import (
    accelerator_variant,
    check_driver_for_lock,
    check_host,
    min_driver_for_cuda,
    parse_gpu_selection,
    torch_pypi_cuda_constraint,
)
from envd.errors import HostRequirementError, UsageError
from envd.gateways.nvml import NvmlGateway, RecordedGpus, cuda_version_text
from envd.host import cpu_model, detect_host, memory_bytes, os_name
from tests.fakes.nvml import A100, H100, T4, FakeNvml


def gateway(fake: FakeNvml) -> NvmlGateway:
    return NvmlGateway(module_loader=lambda: fake)


def test_no_library_is_a_cpu_host() -> None:
    def missing() -> object:
        raise ImportError("No module named 'pynvml'")

    report = NvmlGateway(module_loader=missing).read()
    assert report.gpus == () and "not installed" in report.error


def test_no_driver_is_a_cpu_host() -> None:
    report = gateway(FakeNvml(init_error=RuntimeError("Driver Not Loaded"))).read()
    assert report.gpus == () and "no NVIDIA driver" in report.error


def test_one_gpu() -> None:
    fake = FakeNvml(gpus=[H100])
    report = gateway(fake).read()
    assert [g.name for g in report.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert report.gpus[0].compute_capability == "9.0"
    assert report.driver_version == "550.54.15" and report.cuda_driver_version == "12.4"
    assert report.error == "" and fake.shutdowns == 1


def test_eight_mixed_gpus() -> None:
    report = gateway(FakeNvml(gpus=[H100, A100, T4, H100, A100, T4, H100, A100])).read()
    assert len(report.gpus) == 8
    assert {g.compute_capability for g in report.gpus} == {"9.0", "8.0", "7.5"}
    assert len({g.uuid for g in report.gpus}) == 8


def test_error_mid_query_keeps_what_was_read() -> None:
    fake = FakeNvml(gpus=[H100, A100, T4], fail_at=1)
    report = gateway(fake).read()
    assert len(report.gpus) == 1 and "GPU 1" in report.error
    assert fake.shutdowns == 1


def test_real_nvml_on_this_machine_does_not_crash() -> None:
    host = detect_host(NvmlGateway())
    assert host.cpu_count > 0 and host.memory_bytes > 0
    if not host.gpus:
        assert host.gpu_error


def test_recorded_report(tmp_path: Path) -> None:
    path = tmp_path / "gpus.json"
    path.write_text(
        json.dumps(
            {
                "gpus": [
                    {
                        "index": 0,
                        "name": "H200",
                        "uuid": "GPU-1",
                        "memory_bytes": 1,
                        "compute_capability": "9.0",
                    }
                ],
                "driver_version": "560.1",
                "cuda_driver_version": "12.6",
            }
        )
    )
    assert RecordedGpus(str(path)).read().gpus[0].name == "H200"
    assert "cannot read" in RecordedGpus(str(tmp_path / "nope")).read().error


def test_host_files() -> None:
    assert cpu_model("processor: 0\nmodel name\t: AMD EPYC 9654\n") == "AMD EPYC 9654"
    assert memory_bytes("MemTotal:       1024 kB\n") == 1024 * 1024
    assert os_name('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n').startswith("Debian")
    assert cuda_version_text(12040) == "12.4" and cuda_version_text(11080) == "11.8"


def test_required_gpu_on_cpu_host_names_what_is_missing() -> None:
    with pytest.raises(HostRequirementError) as info:
        check_host("required", None, 0, "", "", "no NVIDIA driver: not found", False)
    assert "no NVIDIA GPU" in str(info.value) and "no NVIDIA driver" in str(info.value)


def test_required_gpu_without_nvidia_runtime() -> None:
    with pytest.raises(HostRequirementError) as info:
        check_host("required", None, 1, "550.54.15", "12.4", "", False)
    assert "nvidia runtime" in str(info.value)
    assert "nvidia-container-toolkit" in (info.value.hint or "")


def test_cuda_newer_than_driver_names_both_versions() -> None:
    with pytest.raises(HostRequirementError) as info:
        check_host("auto", "12.6", 1, "550.54.15", "12.4", "", True)
    assert "12.6" in str(info.value) and "12.4" in str(info.value)
    assert "560.28.03" in (info.value.hint or "")


def test_auto_on_cpu_host_passes_and_none_ignores_gpus() -> None:
    check_host("auto", "12.4", 0, "", "", "no driver", False)
    check_host("none", None, 2, "550", "12.4", "", True)


def test_lock_driver_check() -> None:
    check_driver_for_lock("550.54.14", "", 0)  # CPU host: nothing to check
    check_driver_for_lock("550.54.14", "555.42.02", 1)
    with pytest.raises(HostRequirementError) as info:
        check_driver_for_lock("550.54.14", "535.104.05", 1)
    assert "550.54.14" in str(info.value) and "535.104.05" in str(info.value)


def test_variants_and_drivers() -> None:
    assert accelerator_variant(None) == "cpu" and accelerator_variant("12.4") == "cu124"
    assert min_driver_for_cuda("12.4") == "550.54.14"
    assert min_driver_for_cuda("12.7") == "570.26"  # no 12.7 release: the next one up


def test_torch_constraint_for_cuda() -> None:
    assert torch_pypi_cuda_constraint("12.4") == "torch<2.7"
    assert torch_pypi_cuda_constraint("12.8") == "torch<2.10"
    assert torch_pypi_cuda_constraint("11.0") is None


def test_gpu_selection() -> None:
    assert parse_gpu_selection("all", 2) is None and parse_gpu_selection("", 2) is None
    assert parse_gpu_selection("0,1", 2) == (0, 1)
    with pytest.raises(UsageError):
        parse_gpu_selection("2", 2)
    with pytest.raises(UsageError):
        parse_gpu_selection("first", 2)
