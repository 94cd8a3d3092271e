"""NVML (nvidia-ml-py): the only module that imports pynvml.

Reading the GPUs never raises: no library, no driver or an NVML error mid-query comes back as a
report whose `error` says why there are no (or fewer) GPUs, so a CPU host is a host, not a failure.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, cast

from envd.gateways.engine import Engine
from envd.model import names
from envd.model.host import GpuDevice

# NVML return codes (nvml.h); stable ABI values, so a fake module need not define them.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18

_INIT_REASONS = {
    NVML_ERROR_LIBRARY_NOT_FOUND: "the NVIDIA driver is not installed (no libnvidia-ml.so.1)",
    NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    NVML_ERROR_NO_PERMISSION: "no permission to talk to the NVIDIA driver",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVIDIA driver library and kernel module differ (reboot after a driver upgrade)"
    ),
}


@dataclass(frozen=True)
class GpuReport:
    gpus: tuple[GpuDevice, ...] = ()
    driver_version: str = ""  # "550.54.15"
    cuda_driver_version: str = ""  # highest CUDA the driver supports, "12.4"
    # Why there are no (or fewer) GPUs; "" when all went well. With no GPUs it always reads
    # "no NVIDIA GPU: <reason>", a clause the checks and `envctl info` show as is.
    error: str = ""
    # Where the GPUs were read: "NVML on this machine", "the engine at tcp://gpu1:2376".
    source: str = ""


class Nvml(Protocol):
    """What the rest of envd needs from NVML: one read of the host's GPUs."""

    def read(self) -> GpuReport: ...


class _Memory(Protocol):
    total: int


class NvmlModule(Protocol):
    """The part of pynvml this gateway calls (pynvml ships no type information)."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> _Memory: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...


def _import_pynvml() -> NvmlModule:
    # Imported here, not at module level, so envd runs (and tests import this) without it.
    return cast(NvmlModule, importlib.import_module("pynvml"))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(exc: BaseException) -> str:
    return _text(exc) or type(exc).__name__


LOCAL_SOURCE = "NVML on this machine"


def cuda_version_text(code: int) -> str:
    """NVML's integer CUDA version as text: 12040 -> "12.4", 13000 -> "13.0"."""
    return f"{code // 1000}.{(code % 1000) // 10}"


@dataclass
class NvmlGateway:
    """Reads the host's GPUs through NVML; `module_loader` lets tests hand in a fake pynvml."""

    module_loader: Callable[[], NvmlModule] = field(default=_import_pynvml)

    def read(self) -> GpuReport:
        return replace(self._read(), source=LOCAL_SOURCE)

    def _read(self) -> GpuReport:
        try:
            nvml = self.module_loader()
        except ImportError as exc:
            return GpuReport(error=f"no NVIDIA GPU: nvidia-ml-py is not installed ({exc})")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            code: int = getattr(exc, "value", -1)
            reason = _INIT_REASONS.get(code, "NVML could not start")
            return GpuReport(error=f"no NVIDIA GPU: {reason}; NVML: {_describe(exc)}")
        except OSError as exc:  # a broken libnvidia-ml.so that the loader found but cannot load
            return GpuReport(error=f"no NVIDIA GPU: cannot load NVML ({exc})")
        try:
            return _query(nvml)
        except Exception as exc:  # a binding bug must not take the daemon down: report it
            failure = f"{type(exc).__name__}: {exc}"
            return GpuReport(error=f"no NVIDIA GPU: NVML failed unexpectedly ({failure})")
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass  # nothing left to release; the report is already made


def _query(nvml: NvmlModule) -> GpuReport:
    """Everything after nvmlInit; an NVML error keeps what was read and says what was lost."""
    errors: list[str] = []
    driver = cuda = ""
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    except nvml.NVMLError as exc:
        errors.append(f"driver version: {_describe(exc)}")
    try:
        cuda = cuda_version_text(int(nvml.nvmlSystemGetCudaDriverVersion()))
    except nvml.NVMLError as exc:
        errors.append(f"CUDA driver version: {_describe(exc)}")
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except nvml.NVMLError as exc:
        errors.append(f"GPU count: {_describe(exc)}")
        count = 0
    gpus: list[GpuDevice] = []
    for index in range(count):
        try:
            gpus.append(_device(nvml, index))
        except nvml.NVMLError as exc:
            errors.append(f"GPU {index}: {_describe(exc)}")
    error = "NVML failed reading " + "; ".join(errors) if errors else ""
    if not gpus:  # the report must say there is no GPU, and why
        error = f"no NVIDIA GPU: {error or 'the driver is loaded but NVML lists no devices'}"
    return GpuReport(tuple(gpus), driver, cuda, error)


def _device(nvml: NvmlModule, index: int) -> GpuDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    try:
        memory = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) != NVML_ERROR_NOT_SUPPORTED:
            raise
        memory = 0  # unified-memory parts have no separate device memory to report
    return GpuDevice(
        index=index,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        memory_bytes=memory,
        compute_capability=f"{major}.{minor}",
    )


@dataclass(frozen=True)
class RecordedGpus:
    """A GPU report replayed from a JSON file ($ENVD_NVML_REPORT): support and tests."""

    path: str

    def read(self) -> GpuReport:
        try:
            data = json.loads(Path(self.path).read_text())
            return GpuReport(
                gpus=tuple(GpuDevice(**g) for g in data.get("gpus", [])),
                driver_version=str(data.get("driver_version", "")),
                cuda_driver_version=str(data.get("cuda_driver_version", "")),
                error=str(data.get("error", "")),
                source=str(data.get("source") or f"the recorded report {self.path}"),
            )
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            return GpuReport(
                error=f"cannot read the recorded GPU report {self.path}: {exc}",
                source=f"the recorded report {self.path}",
            )


def nvml_from_env() -> Nvml:
    recorded = os.environ.get("ENVD_NVML_REPORT")
    return RecordedGpus(recorded) if recorded else NvmlGateway()


# ---------------------------------------------------------------- GPUs of a remote engine

GPU_PROBE_IMAGE = "debian:bookworm-slim"  # any glibc image: the runtime brings nvidia-smi
DEBIAN_BASE_LABEL = names.BASE_SUITE_LABEL  # on the Debian bases envd imports
_QUERY = "index,name,uuid,memory.total,compute_cap,driver_version"
GPU_PROBE_SCRIPT = (
    f"nvidia-smi --query-gpu={_QUERY} --format=csv,noheader,nounits || exit 3; "
    "nvidia-smi | grep -o 'CUDA Version: [0-9.]*' || true"
)
_CUDA_LINE = re.compile(r"CUDA Version: ([0-9]+\.[0-9]+)")


def report_from_nvidia_smi(text: str, source: str) -> GpuReport:
    """The GPU report from GPU_PROBE_SCRIPT's output (CSV rows, then the CUDA version)."""
    gpus: list[GpuDevice] = []
    driver = ""
    errors: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        cells = [c.strip() for c in row]
        if len(cells) != 6 or not cells[0].isdigit():
            continue
        index, name, uuid, memory, compute, driver = cells
        try:
            memory_bytes = int(float(memory)) << 20  # MiB
        except ValueError:
            memory_bytes = 0  # "[N/A]" on unified-memory parts
        gpus.append(GpuDevice(int(index), name, uuid, memory_bytes, compute))
    match = _CUDA_LINE.search(text)
    cuda = match.group(1) if match else ""
    if not cuda and gpus:
        errors.append("nvidia-smi did not say the driver's CUDA version")
    error = "; ".join(errors)
    if not gpus:
        tail = " ".join(text.strip().splitlines()[-3:])[:300]
        error = f"no NVIDIA GPU: nvidia-smi on {source} lists none ({tail or 'no output'})"
    return GpuReport(tuple(gpus), driver, cuda, error, source)


@dataclass
class EngineGpus:
    """The GPUs of the engine's machine, for an engine on another machine: nvidia-smi in a
    throwaway container given every GPU (detection only; nothing is built or verified)."""

    engine: Engine
    image: str = field(default_factory=lambda: os.environ.get("ENVD_GPU_PROBE_IMAGE", ""))

    def read(self) -> GpuReport:
        host = self.engine.endpoint.host
        source = f"the engine at {host}"
        info = self.engine.info()
        if not info.reachable:
            return GpuReport(
                error=f"no NVIDIA GPU: the engine at {host} does not answer ({info.error})",
                source=source,
            )
        request: dict[str, object]
        if info.nvidia_runtime:
            request = {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}
        elif info.nvidia_cdi:
            request = {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]}
        else:
            return GpuReport(
                error=f"no NVIDIA GPU: no GPU runtime on the engine at {host} "
                "(neither the nvidia runtime nor CDI)",
                source=source,
            )
        try:
            image = self._probe_image()
            result = self.engine.run(
                image,
                ["sh", "-c", GPU_PROBE_SCRIPT],
                network=False,
                labels={names.ROLE_LABEL: names.ROLE_GPU_PROBE},
                device_requests=[request],
                timeout=120,
            )
        except Exception as exc:  # detection never fails the daemon: say why there are none
            return GpuReport(
                error=f"no NVIDIA GPU: the GPU probe on the engine at {host} failed ({exc})",
                source=source,
            )
        if result.exit_code != 0:
            tail = " ".join(result.output.strip().splitlines()[-3:])[:300]
            return GpuReport(
                error=f"no NVIDIA GPU: nvidia-smi on the engine at {host} failed "
                f"(exit {result.exit_code}: {tail})",
                source=source,
            )
        return report_from_nvidia_smi(result.output, source)

    def _probe_image(self) -> str:
        """ENVD_GPU_PROBE_IMAGE; else debian:bookworm-slim when the engine has it, else a
        Debian base envd imported there (no registry needed), else debian:bookworm-slim pulled."""
        if self.image:
            return self.image
        if self.engine.image_exists(GPU_PROBE_IMAGE):
            return GPU_PROBE_IMAGE
        bases = self.engine.list_images(label=DEBIAN_BASE_LABEL)
        if bases:
            return bases[0].id
        return self.engine.pull(GPU_PROBE_IMAGE).id
