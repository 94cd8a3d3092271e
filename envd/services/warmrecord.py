"""A warm container as the daemon keeps it, what an enter asks of one, and whether one serves
the other: pure records and the reuse rule of envd.services.warm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Warm:
    project: str
    container_id: str
    name: str
    image: str
    started_at: float
    last_used_at: float
    ports: tuple[int, ...] = ()
    gpus: str = ""  # gpu_key of its device requests: "" none, "all", or "0,1"
    users: set[int] = field(default_factory=set)  # uids with a passwd entry already
    retiring: bool = False  # replaced; removed once its commands finish
    status: str = "running"
    agent: str = ""  # the host path of its agent's socket; "" when `docker exec` is the way in
    agent_user: str = ""  # "uid:gid" the agent runs commands as
    env: dict[str, str] = field(default_factory=dict)  # the container's own (image) environment
    workspace: str = ""  # files.folder_identity of the project folder it binds ("" unknown)


@dataclass(frozen=True)
class WarmRequest:
    project: str
    image: str
    image_id: str
    project_dir: str
    ports: tuple[int, ...] = ()
    device_requests: tuple[Mapping[str, Any], ...] = ()
    project_volume: str = ""  # a remote engine: this volume (kept in sync) instead of the bind
    workspace: str = ""  # files.folder_identity of project_dir now: a new folder, a new container

    @property
    def gpus(self) -> str:
        return gpu_key(self.device_requests)


def gpu_key(device_requests: Sequence[Mapping[str, Any]]) -> str:
    """A short, comparable name for a container's GPU requests (also stored as a label)."""
    for request in device_requests:
        if request.get("Count") == -1:
            return "all"
        ids = request.get("DeviceIDs")
        if ids:
            return ",".join(str(i) for i in ids)
    return ""


def fits(warm: Warm, request: WarmRequest) -> bool:
    """Whether a warm container serves a request as is: same image, ports and GPUs, and the
    same project folder bound (one deleted and cloned again, or moved away, under the same
    path leaves the container the old folder's files, or an empty deleted one)."""
    same_folder = not warm.workspace or not request.workspace or warm.workspace == request.workspace
    return (
        warm.image == request.image
        and warm.ports == request.ports
        and warm.gpus == request.gpus
        and same_folder
    )
