"""The machine envd runs on, read once: /proc, uname and os-release, plus NVML's GPU report."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from envd.gateways.nvml import Nvml
from envd.model.host import HostInfo, cpu_model, memory_bytes, os_name


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _os_release(root: Path) -> str:
    # os-release(5): /etc/os-release, falling back to /usr/lib/os-release.
    return _read(root / "etc/os-release") or _read(root / "usr/lib/os-release")


def detect_host(nvml: Nvml, root: Path = Path("/")) -> HostInfo:
    """Read the host once. Never raises for a missing GPU or driver: that is a CPU host."""
    report = nvml.read()
    uname = os.uname()
    return HostInfo(
        cpu_model=cpu_model(_read(root / "proc/cpuinfo")),
        arch=uname.machine or platform.machine(),
        cpu_count=os.cpu_count() or 0,
        memory_bytes=memory_bytes(_read(root / "proc/meminfo")),
        kernel=uname.release,
        os=os_name(_os_release(root)),
        gpus=report.gpus,
        driver_version=report.driver_version,
        cuda_driver_version=report.cuda_driver_version,
        gpu_error=report.error,
        gpu_source=report.source,
    )
