"""A fake pynvml module with the calls NvmlGateway makes, for each host shape we care about."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NVMLError(Exception):
    pass


@dataclass
class FakeGpu:
    name: str
    memory: int
    cc: tuple[int, int]
    uuid: str = "GPU-00000000"


@dataclass
class FakeNvml:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str = "550.54.15"
    cuda: int = 12040
    init_error: Exception | None = None
    fail_at: int | None = None  # raise while reading this GPU index
    shutdowns: int = 0

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if self.fail_at == index:
            raise NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.gpus[handle].cc

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.gpus[handle].name.encode()

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"{self.gpus[handle].uuid}-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        class Info:
            total = self.gpus[handle].memory

        return Info()


H100 = FakeGpu("NVIDIA H100 80GB HBM3", 85_520_809_984, (9, 0))
A100 = FakeGpu("NVIDIA A100-SXM4-40GB", 42_949_672_960, (8, 0))
T4 = FakeGpu("Tesla T4", 16_106_127_360, (7, 5))
