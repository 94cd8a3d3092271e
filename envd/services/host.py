"""The host as the daemon sees it: read once at start, again on `envctl info`.

The host is where the engine runs containers. For a local engine that is this machine (/proc,
uname, os-release, NVML). For a remote engine it is the engine's machine: its architecture,
kernel, OS, CPUs and memory as the engine reports them, and its GPUs from nvidia-smi in a
throwaway container there; this machine's NVML is never read for a remote engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from envd.gateways.engine import Engine
from envd.gateways.machine import detect_host
from envd.gateways.nvml import EngineGpus, Nvml
from envd.model.host import HostInfo

# The engine API names no CPU model; the fingerprint's host section says so rather than guess.
REMOTE_CPU_MODEL = "unknown (a remote engine does not report it)"


class HostProbe:
    def __init__(self, nvml: Callable[[], Nvml], engine: Engine | None = None) -> None:
        self._nvml = nvml
        self._engine = engine
        self._host: HostInfo | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> HostInfo:
        """The host as first read (NVML is read once; `refresh` reads it again)."""
        with self._lock:
            if self._host is None:
                self._host = self._read()
            return self._host

    def refresh(self) -> HostInfo:
        with self._lock:
            self._host = self._read()
            return self._host

    def _read(self) -> HostInfo:
        if self._engine is None or not self._engine.remote:
            return detect_host(self._nvml())
        info = self._engine.info()
        report = EngineGpus(self._engine).read()
        return HostInfo(
            cpu_model=REMOTE_CPU_MODEL,
            arch=info.arch,
            cpu_count=info.cpu_count,
            memory_bytes=info.memory_bytes,
            kernel=info.kernel,
            os=info.os,
            gpus=report.gpus,
            driver_version=report.driver_version,
            cuda_driver_version=report.cuda_driver_version,
            gpu_error=report.error,
            gpu_source=report.source,
        )
