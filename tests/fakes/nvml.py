"""Fake NVML, two ways.

`FakeNvml` stands in for `NvmlGateway` (the same `read()`), for code that only needs a host's GPUs.
`FakePynvml` stands in for the pynvml module itself, handed to `NvmlGateway(module_loader=...)`, so
the gateway's own code paths run: no library, no driver, one GPU, many, an error mid-query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from envd.gateways.nvml import GpuReport
from envd.model.host import GpuDevice

# NVML return codes, as pynvml defines them.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
DRIVER_NOT_LOADED = 9
LIBRARY_NOT_FOUND = 12
GPU_IS_LOST = 15
LIB_RM_VERSION_MISMATCH = 18
UNKNOWN = 999

_MESSAGES = {
    NOT_SUPPORTED: "Not Supported",
    NO_PERMISSION: "Insufficient Permissions",
    DRIVER_NOT_LOADED: "Driver Not Loaded",
    LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    GPU_IS_LOST: "GPU is lost",
    LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
    UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries the NVML return code in `value`."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGpu:
    name: str
    memory_bytes: int
    cc: tuple[int, int]
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    lost: bool = False  # nvmlDeviceGetHandleByIndex fails with GPU_IS_LOST
    memory_error: int | None = None  # nvmlDeviceGetMemoryInfo fails with this code


@dataclass
class _MemoryInfo:
    total: int
    free: int
    used: int


@dataclass
class FakePynvml:
    """The pynvml calls NvmlGateway makes, over a list of FakeGpu."""

    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str | bytes = "550.54.15"
    cuda: int = 12040
    init_error: int | None = None  # nvmlInit fails with this code
    count_error: int | None = None
    driver_error: int | None = None
    inits: int = 0
    shutdowns: int = 0

    NVMLError = NVMLError

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        if self.driver_error is not None:
            raise NVMLError(self.driver_error)
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if self.gpus[index].lost:
            raise NVMLError(GPU_IS_LOST)
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.gpus[handle].name.encode()  # older bindings return bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self.gpus[handle].uuid

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _MemoryInfo:
        gpu = self.gpus[handle]
        if gpu.memory_error is not None:
            raise NVMLError(gpu.memory_error)
        return _MemoryInfo(total=gpu.memory_bytes, free=gpu.memory_bytes, used=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.gpus[handle].cc


def gpu(name: str, memory_bytes: int, cc: tuple[int, int], n: int = 0) -> FakeGpu:
    return FakeGpu(name, memory_bytes, cc, uuid=f"GPU-{n:08x}-0000-0000-0000-000000000000")


H100 = gpu("NVIDIA H100 80GB HBM3", 85_520_809_984, (9, 0))
A100 = gpu("NVIDIA A100-SXM4-40GB", 42_949_672_960, (8, 0))
L4 = gpu("NVIDIA L4", 24_152_899_584, (8, 9))
T4 = gpu("Tesla T4", 16_106_127_360, (7, 5))


def eight_mixed() -> list[FakeGpu]:
    kinds = [H100, H100, A100, A100, L4, L4, T4, T4]
    return [gpu(k.name, k.memory_bytes, k.cc, n) for n, k in enumerate(kinds)]


@dataclass
class FakeNvml:
    """A ready GpuReport behind the gateway's `read()`; counts the reads."""

    report: GpuReport = field(default_factory=GpuReport)
    reads: int = 0

    def read(self) -> GpuReport:
        self.reads += 1
        return self.report

    @classmethod
    def cpu_host(cls, reason: str = "the NVIDIA kernel driver is not loaded") -> FakeNvml:
        return cls(GpuReport(error=f"no NVIDIA GPU: {reason}"))

    @classmethod
    def gpu_host(
        cls, *gpus: FakeGpu, driver: str = "550.54.15", cuda: str = "12.4", error: str = ""
    ) -> FakeNvml:
        devices = tuple(
            GpuDevice(i, g.name, g.uuid, g.memory_bytes, f"{g.cc[0]}.{g.cc[1]}")
            for i, g in enumerate(gpus)
        )
        return cls(GpuReport(devices, driver, cuda, error))
