"""What the engine answers with (typed records, no docker SDK), and the pure rules that read
its answers (which image store, which product, a reference's repository and tag)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envd.model import names
from envd.model.dockerfile import quote

MANAGED_LABEL = names.MANAGED_LABEL
OutputSink = Callable[[str], None]
log = logging.getLogger(__name__)

CLASSIC_STORE = "classic"  # the engine's own graph driver: image ID = sha256 of the config
CONTAINERD_STORE = "containerd"  # containerd's image store: image ID = manifest (index) digest
_SNAPSHOTTER = "io.containerd.snapshotter.v1"


@dataclass(frozen=True)
class EngineInfo:
    reachable: bool
    version: str = ""
    api_version: str = ""
    runtimes: tuple[str, ...] = ()
    error: str = ""
    host: str = ""  # where the engine is: "unix:///var/run/docker.sock", "tcp://gpu1:2376"
    context: str = ""  # the Docker context that named it; "" for DOCKER_HOST
    remote: bool = False  # not on a local socket: it cannot see this machine's files
    engine_id: str = ""  # the engine's own ID (`docker info` ID)
    os: str = ""  # the engine host's OS ("Debian GNU/Linux 12 (bookworm)")
    arch: str = ""  # the engine host's architecture ("x86_64", "aarch64")
    name: str = ""  # the engine host's name
    cdi_devices: tuple[str, ...] = ()  # CDI devices the engine discovered ("nvidia.com/gpu=0")
    cdi_spec_dirs: tuple[str, ...] = ()
    kernel: str = ""  # the engine host's kernel release
    cpu_count: int = 0  # the engine host's CPUs
    memory_bytes: int = 0  # the engine host's memory
    product: str = ""  # "Docker" or "Podman" (from the version's component names)
    image_store: str = ""  # CLASSIC_STORE or CONTAINERD_STORE
    rootless: bool = False  # the engine runs as an unprivileged user (in a user namespace)

    @property
    def profile(self) -> str:
        """ "Docker 26.1.5 (API 1.45), containerd image store": what the engine is; Podman's
        (which users run either way) says ", rootless" or ", rootful", Docker's only
        ", rootless"."""
        what = f"{self.product or 'Docker'} {self.version} (API {self.api_version})"
        what = f"{what}, {self.image_store} image store" if self.image_store else what
        return f"{what}, {self.privilege}" if self.privilege else what

    @property
    def privilege(self) -> str:
        """ "rootless", "rootful" (said for Podman), or "" (a rootful Docker: the usual)."""
        if self.rootless:
            return "rootless"
        return "rootful" if self.product == "Podman" else ""

    @property
    def nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes

    @property
    def nvidia_cdi(self) -> bool:
        """CDI can hand this engine's containers NVIDIA GPUs (discovered, or spec folders on an
        engine too old to list what it discovered)."""
        if self.cdi_devices:
            return any(d.startswith("nvidia.com/gpu") for d in self.cdi_devices)
        return bool(self.cdi_spec_dirs)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    size: int
    repo_digests: tuple[str, ...]
    layers: tuple[str, ...]  # RootFS layer diff IDs, bottom first
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mount:
    """A bind mount (source is an absolute host path) or a named volume (volume=True)."""

    source: str
    target: str
    read_only: bool = False
    volume: bool = False


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    image: str
    status: str  # "running", "exited", ...
    labels: Mapping[str, str]
    created: str = ""


@dataclass
class RunResult:
    exit_code: int
    output: str  # the last lines of stdout+stderr
    image_id: str = ""  # set when the container was committed
    container_id: str = ""


@dataclass(frozen=True)
class PushResult:
    digest: str
    pushed: int
    skipped: int


def split_reference(reference: str) -> tuple[str, str]:
    """repository and tag of REGISTRY/REPO[:TAG] (a port's colon is not a tag)."""
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag


@dataclass(frozen=True)
class CommitSpec:
    """How a finished step container becomes an image."""

    repository: str
    tag: str
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cmd: Sequence[str] = ()
    workdir: str = ""
    # Called with the stopped container's ID just before it is committed (to read what it
    # changed, see read_changes), never after a failed command.
    before: Callable[[str], None] | None = field(default=None, compare=False)

    def instructions(self, labels: Mapping[str, str]) -> list[str]:
        # `docker commit --change` parses values as a Dockerfile does (it expands `$NAME`):
        # quote them so they reach the image exactly as written.
        out = [f"LABEL {json.dumps(k)}={quote(v)}" for k, v in sorted(labels.items())]
        out += [f"ENV {k}={quote(v)}" for k, v in sorted(self.env.items())]
        if self.cmd:
            out.append(f"CMD {json.dumps(list(self.cmd))}")
        if self.workdir:
            out.append(f"WORKDIR {self.workdir}")
        return out


def image_store(info: Mapping[str, Any]) -> str:
    """CONTAINERD_STORE when `docker info` says its images live in containerd's snapshotters
    (DriverStatus `driver-type io.containerd.snapshotter.v1`), else CLASSIC_STORE."""
    for pair in info.get("DriverStatus") or ():
        if isinstance(pair, list | tuple) and len(pair) == 2 and tuple(pair)[1] == _SNAPSHOTTER:
            return CONTAINERD_STORE
    return CLASSIC_STORE


def engine_product(version: Mapping[str, Any]) -> str:
    """ "Podman" when the version's components name Podman's engine, else "Docker"."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or () if isinstance(c, dict)]
    return "Podman" if any("podman" in n.lower() for n in names) else "Docker"


def engine_rootless(info: Mapping[str, Any], libpod_info: Mapping[str, Any] | None = None) -> bool:
    """Whether the engine runs without root. Docker says `name=rootless` among `docker info`'s
    SecurityOptions; Podman 4.3's Docker-compatible info does not, its own (libpod) info says
    `host.security.rootless`."""
    options = [str(o) for o in info.get("SecurityOptions") or ()]
    if any("name=rootless" in o.split(",") for o in options):
        return True
    host = (libpod_info or {}).get("host")
    security = host.get("security") if isinstance(host, Mapping) else None
    return bool(security.get("rootless")) if isinstance(security, Mapping) else False
