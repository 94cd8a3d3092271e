"""The host envd runs on: CPU, memory, kernel, OS, and GPUs from NVML."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from envd.gateways.nvml import GpuDevice, GpuSource


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    arch: str
    cpu_count: int
    memory_bytes: int
    kernel: str
    os: str
    gpus: tuple[GpuDevice, ...]
    driver_version: str
    cuda_driver_version: str
    gpu_error: str


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return value.strip()
    return platform.processor() or "unknown"


def memory_bytes(meminfo: str) -> int:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def os_name(os_release: str) -> str:
    for line in os_release.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return platform.system()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def detect_host(gpus: GpuSource, root: Path = Path("/")) -> HostInfo:
    report = gpus.read()
    return HostInfo(
        cpu_model=cpu_model(_read(root / "proc/cpuinfo")),
        arch=platform.machine(),
        cpu_count=os.cpu_count() or 0,
        memory_bytes=memory_bytes(_read(root / "proc/meminfo")),
        kernel=platform.release(),
        os=os_name(_read(root / "etc/os-release")),
        gpus=report.gpus,
        driver_version=report.driver_version,
        cuda_driver_version=report.cuda_driver_version,
        gpu_error=report.error,
    )
