"""The host as the daemon sees it: read once at start, again on `envctl info`.

Its GPUs are those the engine's containers can get: this machine's (NVML) for a local engine,
the engine machine's (nvidia-smi in a throwaway container there) for a remote one; the local
NVML is never read for a remote engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from envd.gateways.engine import Engine
from envd.gateways.machine import detect_host
from envd.gateways.nvml import EngineGpus, Nvml
from envd.model.host import HostInfo


class HostProbe:
    def __init__(self, nvml: Callable[[], Nvml], engine: Engine | None = None) -> None:
        self._nvml = nvml
        self._engine = engine
        self._host: HostInfo | None = None
        self._lock = threading.Lock()

    def gpu_source(self) -> Nvml:
        """Where the GPUs are read: the remote engine's machine, else NVML here."""
        if self._engine is not None and self._engine.remote:
            return EngineGpus(self._engine)
        return self._nvml()

    @property
    def host(self) -> HostInfo:
        """The host as first read (NVML is read once; `refresh` reads it again)."""
        with self._lock:
            if self._host is None:
                self._host = detect_host(self.gpu_source())
            return self._host

    def refresh(self) -> HostInfo:
        with self._lock:
            self._host = detect_host(self.gpu_source())
            return self._host
