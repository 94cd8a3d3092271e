"""A fake engine behind the same container interface as envd.gateways.engine.Engine."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envd.gateways.engine import ContainerInfo, Mount, RunResult


@dataclass
class FakeEngine:
    remote: bool = False  # a local engine: the GPUs come from NVML here
    product: str = "Docker"  # what the engine profile says (envd.gateways.engine)
    containers: dict[str, ContainerInfo] = field(default_factory=dict)
    execs_running: dict[str, int] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    exec_calls: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def start_container(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
        workdir: str = "",
        device_requests: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
    ) -> ContainerInfo:
        cid = f"c{next(self._ids):063d}"
        info = ContainerInfo(cid, name, image, "running", dict(labels or {}))
        self.containers[cid] = info
        self.started.append(cid)
        return info

    def inspect_container(self, ref: str) -> ContainerInfo | None:
        for info in self.containers.values():
            if ref in (info.id, info.name):
                return info
        return None

    def list_containers(self, label: str = "envd.managed") -> list[ContainerInfo]:
        key, _, value = label.partition("=")
        return [c for c in self.containers.values() if c.labels.get(key) == value]

    def remove_container(self, ref: str) -> None:
        info = self.inspect_container(ref)
        if info is not None:
            del self.containers[info.id]
            self.removed.append(info.id)

    def list_volumes(self, label: str = "") -> list[tuple[str, dict[str, str]]]:
        return []  # a fake engine holds no copies of host folders

    def remove_volume(self, name: str) -> None:
        return None

    def exec_capture(self, container: str, argv: Sequence[str], user: str = "") -> RunResult:
        self.exec_calls.append((container, tuple(argv), user))
        return RunResult(0, "")

    def running_execs(self, container: str) -> int:
        return self.execs_running.get(container, 0)

    def kill(self, container_id: str) -> None:
        info = self.containers[container_id]
        self.containers[container_id] = ContainerInfo(
            info.id, info.name, info.image, "exited", info.labels
        )
