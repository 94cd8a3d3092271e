"""CUDA versions, driver and torch tables, and the host checks made before a build."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement

from envd.errors import EXIT_HOST, EXIT_USAGE, HostRequirementError, LockError, UsageError
from envd.gateways.nvml import GpuReport
from envd.model.cuda import (
    MIN_DRIVER,
    TORCH_PYPI_CUDA,
    accelerator_variant,
    check_driver_for_lock,
    check_host,
    cuda_newer_than,
    driver_older_than,
    min_driver_for_cuda,
    parse_cuda_version,
    parse_driver_version,
    parse_gpu_selection,
    torch_pypi_cuda_constraint,
)
from envd.model.host import HostInfo
from tests.fakes.nvml import H100, FakeNvml


def host(report: GpuReport) -> HostInfo:
    return HostInfo(
        cpu_model="AMD EPYC 9654",
        arch="x86_64",
        cpu_count=192,
        memory_bytes=1 << 40,
        kernel="6.1.0-18-amd64",
        os="Debian GNU/Linux 12 (bookworm)",
        gpus=report.gpus,
        driver_version=report.driver_version,
        cuda_driver_version=report.cuda_driver_version,
        gpu_error=report.error,
    )


CPU_HOST = host(FakeNvml.cpu_host("the NVIDIA kernel driver is not loaded").report)
GPU_HOST = host(FakeNvml.gpu_host(H100, driver="550.54.15", cuda="12.4").report)


# ---------------------------------------------------------------- versions


def test_parse_versions() -> None:
    assert parse_cuda_version("12.4") == (12, 4)
    assert parse_cuda_version(" 12.4.1 ") == (12, 4)
    assert parse_driver_version("535.104.05") == (535, 104, 5)
    for bad in ("", "12", "cu124", "12.x", "12.4.1.2a"):
        with pytest.raises(ValueError, match="not a CUDA version"):
            parse_cuda_version(bad)
    with pytest.raises(ValueError, match="not an NVIDIA driver version"):
        parse_driver_version("N/A")


def test_compare_versions() -> None:
    assert cuda_newer_than("12.10", "12.9")  # numbers, not strings
    assert not cuda_newer_than("12.4", "12.4") and not cuda_newer_than("11.8", "12.0")
    assert driver_older_than("535.104.05", "550.54.14")
    assert not driver_older_than("550.54.15", "550.54.14")
    assert driver_older_than("570.26", "570.124.06")


@pytest.mark.parametrize(
    ("cuda", "variant"),
    [(None, "cpu"), ("", "cpu"), ("11.8", "cu118"), ("12.4", "cu124"), ("13.0", "cu130")],
)
def test_accelerator_variant(cuda: str | None, variant: str) -> None:
    assert accelerator_variant(cuda) == variant


# ---------------------------------------------------------------- minimum drivers


@pytest.mark.parametrize(
    ("cuda", "driver"),
    [
        ("11.8", "520.61.05"),
        ("12.0", "525.60.13"),
        ("12.1", "530.30.02"),
        ("12.2", "535.54.03"),
        ("12.3", "545.23.06"),
        ("12.4", "550.54.14"),
        ("12.5", "555.42.02"),
        ("12.6", "560.28.03"),
        ("12.8", "570.26"),
        ("12.9", "575.51.03"),
        ("13.0", "580.65.06"),
    ],
)
def test_min_driver_for_cuda_release(cuda: str, driver: str) -> None:
    assert min_driver_for_cuda(cuda) == driver


def test_min_driver_between_and_beyond_releases() -> None:
    assert min_driver_for_cuda("12.7") == "570.26"  # no 12.7 release: the next one up
    assert min_driver_for_cuda("10.2") == "450.51.05"  # older than the table: its first row
    assert min_driver_for_cuda("13.9") == MIN_DRIVER["13.2"]  # a later 13.x: newest 13.x row
    with pytest.raises(LockError, match=r"minimum NVIDIA driver for CUDA 14\.0"):
        min_driver_for_cuda("14.0")


def test_min_driver_table_rises_with_cuda() -> None:
    releases = sorted(MIN_DRIVER, key=parse_cuda_version)
    drivers = [parse_driver_version(MIN_DRIVER[r]) for r in releases]
    assert drivers == sorted(drivers)


# ---------------------------------------------------------------- torch on PyPI


@pytest.mark.parametrize(
    ("cuda", "constraint"),
    [
        ("11.6", None),  # every torch 2.x PyPI wheel needs CUDA 11.7 or newer
        ("11.7", "torch<2.1"),
        ("11.8", "torch<2.1"),
        ("12.1", "torch<2.5"),
        ("12.4", "torch<2.7"),  # 2.5 and 2.6 are cu124
        ("12.5", "torch<2.7"),
        ("12.6", "torch<2.8"),  # 2.7 is cu126
        ("12.8", "torch<2.11"),  # 2.8 to 2.10 are cu128
        ("12.9", "torch<2.11"),  # 2.11 went to cu130
        ("13.0", "torch<2.15"),
    ],
)
def test_torch_pypi_cuda_constraint(cuda: str, constraint: str | None) -> None:
    assert torch_pypi_cuda_constraint(cuda) == constraint


def test_torch_constraint_is_a_requirement_that_admits_the_right_releases() -> None:
    requirement = Requirement(torch_pypi_cuda_constraint("12.4") or "")
    assert requirement.name == "torch"
    assert requirement.specifier.contains("2.6.0") and requirement.specifier.contains("2.5.1")
    assert not requirement.specifier.contains("2.7.0")


def test_torch_table_never_goes_back_in_cuda() -> None:
    releases = sorted(TORCH_PYPI_CUDA, key=parse_cuda_version)
    cudas = [parse_cuda_version(TORCH_PYPI_CUDA[r]) for r in releases]
    assert cudas == sorted(cudas)  # what makes one upper bound on torch enough


# ---------------------------------------------------------------- check_host


def test_gpu_required_on_a_cpu_host() -> None:
    with pytest.raises(HostRequirementError) as caught:
        check_host("required", None, CPU_HOST, nvidia_runtime=False)
    error = caught.value
    assert "`gpu: required`" in error.message
    assert "no NVIDIA GPU" in error.message
    assert "the NVIDIA kernel driver is not loaded" in error.message  # NVML's reason
    assert error.hint and "install the NVIDIA driver" in error.hint and "gpu: auto" in error.hint
    assert error.exit_code == EXIT_HOST


def test_gpu_required_on_a_cpu_host_without_a_reason() -> None:
    bare = host(GpuReport())
    with pytest.raises(HostRequirementError, match="no NVIDIA GPU"):
        check_host("required", "12.4", bare, nvidia_runtime=True)


def test_gpu_required_without_the_nvidia_runtime() -> None:
    with pytest.raises(HostRequirementError) as caught:
        check_host("required", None, GPU_HOST, nvidia_runtime=False)
    error = caught.value
    assert "`nvidia` runtime" in error.message and "1 NVIDIA GPU" in error.message
    assert error.hint and "nvidia-container-toolkit" in error.hint and "restart" in error.hint


def test_cuda_newer_than_the_driver() -> None:
    with pytest.raises(HostRequirementError) as caught:
        check_host("auto", "12.6", GPU_HOST, nvidia_runtime=True)
    error = caught.value
    assert "CUDA 12.6" in error.message  # what envd.yaml asks for
    assert "CUDA 12.4" in error.message  # what the driver supports
    assert "550.54.15" in error.message  # the driver it has
    assert "560.28.03" in error.message  # the driver it needs
    assert error.hint and "560.28.03" in error.hint and 'cuda: "12.4"' in error.hint


@pytest.mark.parametrize(
    ("gpu", "cuda", "target", "runtime"),
    [
        ("required", "12.4", GPU_HOST, True),  # exactly what the driver supports
        ("required", "12.1", GPU_HOST, True),
        ("auto", None, GPU_HOST, False),
        ("auto", "12.8", CPU_HOST, False),  # a CPU host may lock and build CUDA images
        ("none", "12.8", CPU_HOST, False),
        ("none", "12.8", GPU_HOST, False),  # no GPU is attached, so the driver does not matter
        ("auto", "12.8", host(FakeNvml.gpu_host(H100, cuda="").report), True),  # unknown CUDA
    ],
)
def test_what_passes(gpu: str, cuda: str | None, target: HostInfo, runtime: bool) -> None:
    check_host(gpu, cuda, target, runtime)


# ---------------------------------------------------------------- check_driver_for_lock


def test_lock_needs_a_newer_driver() -> None:
    with pytest.raises(HostRequirementError) as caught:
        check_driver_for_lock("560.28.03", GPU_HOST)
    assert "560.28.03" in caught.value.message and "550.54.15" in caught.value.message
    assert caught.value.hint and "envctl lock" in caught.value.hint


def test_lock_driver_checks_that_pass() -> None:
    check_driver_for_lock("550.54.14", GPU_HOST)  # newer patch level
    check_driver_for_lock("550.54.15", GPU_HOST)  # equal
    check_driver_for_lock("", GPU_HOST)  # a CPU lock
    check_driver_for_lock("580.65.06", CPU_HOST)  # a CPU host: nothing to check
    odd = host(FakeNvml.gpu_host(H100, driver="N/A").report)
    check_driver_for_lock("580.65.06", odd)  # unreadable: not evidence of an old driver


# ---------------------------------------------------------------- --gpus


@pytest.mark.parametrize(
    ("text", "count", "chosen"),
    [
        ("all", 2, None),
        ("ALL", 0, None),
        ("", 8, None),
        ("0", 1, (0,)),
        ("0,1", 2, (0, 1)),
        (" 3 , 1 ", 8, (3, 1)),
    ],
)
def test_parse_gpu_selection(text: str, count: int, chosen: tuple[int, ...] | None) -> None:
    assert parse_gpu_selection(text, count) == chosen


@pytest.mark.parametrize(
    ("text", "count", "message"),
    [
        ("2", 2, "names GPU 2, but this host has 2 GPU(s), 0 to 1"),
        ("0", 0, "names GPU 0, but this host has no NVIDIA GPU"),
        ("0,0", 2, "names GPU 0 twice"),
        ("first", 2, "takes `all` or GPU indexes"),
        ("0,", 2, "takes `all` or GPU indexes"),
        ("-1", 2, "takes `all` or GPU indexes"),
        ("1.5", 2, "takes `all` or GPU indexes"),
        ("device=0", 2, "takes `all` or GPU indexes"),
    ],
)
def test_parse_gpu_selection_refuses(text: str, count: int, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_gpu_selection(text, count)
    assert message in caught.value.message
    assert caught.value.exit_code == EXIT_USAGE


def test_a_cuda_newer_than_the_table_and_the_driver_is_a_host_error() -> None:
    """On a CUDA 13.0 driver, `cuda: "14.0"` is the host's limit (exit 7), not a lock error."""
    new_driver = host(FakeNvml.gpu_host(H100, driver="580.159", cuda="13.0").report)
    with pytest.raises(HostRequirementError, match=r"CUDA 14\.0 needs a newer driver") as failed:
        check_host("auto", "14.0", new_driver, True)
    assert failed.value.exit_code == EXIT_HOST


# ---------------------------------------------------------------- host_gap (status)


def test_status_says_a_gpu_environment_needs_a_gpu_this_host_lacks() -> None:
    from envd.model.cuda import host_gap

    gap = host_gap("required", CPU_HOST)
    assert "`gpu: required`" in gap and "the NVIDIA kernel driver is not loaded" in gap
    assert "build" in gap and "enter and runs need" in gap
    assert host_gap("required", GPU_HOST) == ""
    assert host_gap("auto", CPU_HOST) == ""
