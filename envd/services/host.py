"""The host as the daemon sees it: read once at start, again on `envctl info`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from envd.gateways.machine import detect_host
from envd.gateways.nvml import Nvml
from envd.model.host import HostInfo


class HostProbe:
    def __init__(self, nvml: Callable[[], Nvml]) -> None:
        self._nvml = nvml
        self._host: HostInfo | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> HostInfo:
        """The host as first read (NVML is read once; `refresh` reads it again)."""
        with self._lock:
            if self._host is None:
                self._host = detect_host(self._nvml())
            return self._host

    def refresh(self) -> HostInfo:
        with self._lock:
            self._host = detect_host(self._nvml())
            return self._host
