"""NVML (nvidia-ml-py): the only module that imports pynvml.

No library, no driver, or an NVML error is never an exception here: the report says so and the
host is treated as having no (or fewer) GPUs.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# pynvml ships no type information; the module is reached only through this file.
NvmlModule = Any


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    uuid: str
    memory_bytes: int
    compute_capability: str  # "9.0"


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[GpuDevice, ...] = ()
    driver_version: str = ""
    cuda_driver_version: str = ""  # highest CUDA the driver supports, "12.4"
    error: str = ""  # why there are no (or fewer) GPUs; "" when all went well


class GpuSource(Protocol):
    def read(self) -> GpuReport: ...


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version_text(code: int) -> str:
    """NVML's integer CUDA version (12040) as text ("12.4")."""
    return f"{code // 1000}.{(code % 1000) // 10}"


@dataclass
class NvmlGateway:
    """Reads the host's GPUs through NVML; `module_loader` lets tests hand in a fake pynvml."""

    module_loader: Callable[[], NvmlModule] = field(
        default=lambda: importlib.import_module("pynvml")
    )

    def read(self) -> GpuReport:
        try:
            nvml = self.module_loader()
        except ImportError as exc:
            return GpuReport(error=f"nvidia-ml-py is not installed ({exc})")
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
            return GpuReport(error=f"no NVIDIA driver: {_text(exc) or type(exc).__name__}")
        gpus: list[GpuDevice] = []
        driver = cuda = error = ""
        try:
            driver = _text(nvml.nvmlSystemGetDriverVersion())
            cuda = cuda_version_text(int(nvml.nvmlSystemGetCudaDriverVersion()))
            for index in range(int(nvml.nvmlDeviceGetCount())):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                gpus.append(
                    GpuDevice(
                        index=index,
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                        compute_capability=f"{major}.{minor}",
                    )
                )
        except Exception as exc:  # an NVML error mid-query: keep what was read
            error = f"NVML failed while reading GPU {len(gpus)}: {_text(exc) or type(exc).__name__}"
        finally:
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass
        return GpuReport(tuple(gpus), driver, cuda, error)


@dataclass(frozen=True)
class RecordedGpus:
    """A GPU report replayed from a JSON file ($ENVD_NVML_REPORT): support and tests."""

    path: str

    def read(self) -> GpuReport:
        try:
            data = json.loads(Path(self.path).read_text())
        except (OSError, ValueError) as exc:
            return GpuReport(error=f"cannot read the recorded GPU report {self.path}: {exc}")
        return GpuReport(
            gpus=tuple(GpuDevice(**g) for g in data.get("gpus", [])),
            driver_version=str(data.get("driver_version", "")),
            cuda_driver_version=str(data.get("cuda_driver_version", "")),
            error=str(data.get("error", "")),
        )


def nvml_from_env() -> GpuSource:
    recorded = os.environ.get("ENVD_NVML_REPORT")
    return RecordedGpus(recorded) if recorded else NvmlGateway()
