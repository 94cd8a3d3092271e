"""The host envd runs on: CPU, memory, kernel, OS, and GPUs from NVML.

The Docker engine (version, runtimes) is not here; it comes from the engine gateway. File
readers take the text, so each is tested on sample files; `envd.gateways.machine.detect_host`
reads them (pure here).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuDevice:
    index: int  # NVML index, the one `nvidia-smi` and `--gpus` use
    name: str  # "NVIDIA H100 80GB HBM3"
    uuid: str  # "GPU-..."
    memory_bytes: int  # total device memory; 0 where NVML cannot say (unified-memory parts)
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    arch: str  # "x86_64", "aarch64"
    cpu_count: int
    memory_bytes: int
    kernel: str  # "6.1.0-18-amd64"
    os: str  # "Debian GNU/Linux 12 (bookworm)"
    gpus: tuple[GpuDevice, ...]
    driver_version: str  # "" on a CPU host
    cuda_driver_version: str  # highest CUDA the driver supports, "12.4"; "" on a CPU host
    gpu_error: str  # why there are no (or fewer) GPUs; "" when NVML read them all
    # where the GPUs were read: "NVML on this machine", "the engine at tcp://gpu1:2376"
    gpu_source: str = ""


# Arm CPUs name no model in /proc/cpuinfo; implementer and part decoded as lscpu's table does.
_ARM_PARTS = {
    ("0x41", "0xd0c"): "ARM Neoverse-N1",
    ("0x41", "0xd40"): "ARM Neoverse-V1",
    ("0x41", "0xd49"): "ARM Neoverse-N2",
    ("0x41", "0xd4f"): "ARM Neoverse-V2",
    ("0x41", "0xd8e"): "ARM Neoverse-N3",
    ("0x41", "0xd84"): "ARM Neoverse-V3",
}


def cpu_model(cpuinfo: str) -> str:
    """The CPU's marketing name from /proc/cpuinfo text; "unknown" when it names none."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    implementer, part = fields.get("CPU implementer", ""), fields.get("CPU part", "")
    if implementer and part:
        known = _ARM_PARTS.get((implementer.lower(), part.lower()))
        return known or f"Arm implementer {implementer} part {part}"
    return fields.get("Hardware") or "unknown"


def memory_bytes(meminfo: str) -> int:
    """MemTotal from /proc/meminfo text, in bytes; 0 when absent."""
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            amount, _, unit = value.strip().partition(" ")
            return int(amount) * (1024 if unit.strip().lower() == "kb" else 1)
    return 0


def os_name(os_release: str) -> str:
    """PRETTY_NAME from os-release text (shell quoting), else NAME and VERSION, else "Linux"."""
    values: dict[str, str] = {}
    for line in os_release.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        values[key] = " ".join(words)
    if values.get("PRETTY_NAME"):
        return values["PRETTY_NAME"]
    name = " ".join(v for v in (values.get("NAME", ""), values.get("VERSION", "")) if v)
    return name or "Linux"
