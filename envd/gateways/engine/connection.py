"""The connection every facet of the engine shares: where the engine is, the lazily made
client, what the engine is (`info`), and the labels everything envd makes carries."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from envd.errors import EngineUnavailable
from envd.gateways.engine.endpoint import EngineEndpoint, resolve_endpoint
from envd.gateways.engine.errors import short
from envd.gateways.engine.records import (
    CLASSIC_STORE,
    MANAGED_LABEL,
    EngineInfo,
    engine_product,
    engine_rootless,
    image_store,
)

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)


class EngineConnection:
    """The base of `Engine`: connects lazily, so making one costs nothing."""

    def __init__(self, extra_labels: Mapping[str, str] | None = None, timeout: int = 600) -> None:
        self.extra_labels = dict(extra_labels or {})
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._endpoint: EngineEndpoint | None = None
        self._endpoint_lock = threading.Lock()
        self._profile: EngineInfo | None = None

    # ------------------------------------------------------------ connection

    @property
    def endpoint(self) -> EngineEndpoint:
        """Where the engine is (read once from the environment; nothing is contacted)."""
        with self._endpoint_lock:
            if self._endpoint is None:
                self._endpoint = resolve_endpoint()
            return self._endpoint

    @property
    def remote(self) -> bool:
        """Whether the engine is on another machine (see `engine_is_remote`)."""
        return self.endpoint.remote

    @property
    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                import docker

                where = self.endpoint
                if where.error:
                    raise EngineUnavailable(where.error, hint=where.hint)
                try:
                    self._client = docker.DockerClient(
                        base_url=where.host,
                        tls=where.tls or False,
                        timeout=self._timeout,
                        use_ssh_client=where.host.startswith("ssh://"),
                    )
                    self._client.ping()
                except Exception as exc:  # docker raises several unrelated types here
                    self._client = None
                    raise EngineUnavailable(
                        f"the container engine at {where.host} ({where.source}) does not answer "
                        f"({short(exc)})",
                        hint="start it with `make engine` (or `dockerd &`), then retry"
                        if not where.remote
                        else "is that engine running and reachable from here? "
                        "(`docker version` with the same DOCKER_HOST or context tells)",
                    ) from exc
            return self._client

    def info(self) -> EngineInfo:
        where = self.endpoint
        found = self._info()
        return replace(found, host=where.host, context=where.context, remote=where.remote)

    def _info(self) -> EngineInfo:
        try:
            client = self.client
            version = client.version()
            info = client.info()
        except EngineUnavailable as exc:
            return EngineInfo(reachable=False, error=exc.message)
        except Exception as exc:
            self._client = None
            return EngineInfo(reachable=False, error=short(exc))
        discovered = info.get("DiscoveredDevices") or []
        product = engine_product(version)
        libpod = self._libpod_info(client) if product == "Podman" else None
        found = EngineInfo(
            reachable=True,
            version=str(version.get("Version", "")),
            api_version=str(version.get("ApiVersion", "")),
            runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
            engine_id=str(info.get("ID", "")),
            os=str(info.get("OperatingSystem", "")),
            arch=str(info.get("Architecture", "")),
            name=str(info.get("Name", "")),
            cdi_devices=tuple(
                str(d.get("ID", "")) for d in discovered if str(d.get("Source", "")) == "cdi"
            ),
            cdi_spec_dirs=tuple(str(d) for d in info.get("CDISpecDirs") or ()),
            kernel=str(info.get("KernelVersion", "")),
            cpu_count=int(info.get("NCPU") or 0),
            memory_bytes=int(info.get("MemTotal") or 0),
            product=product,
            image_store=image_store(info),
            rootless=engine_rootless(info, libpod),
        )
        if self._profile is None:  # once per daemon start: what the engine is decides paths
            self._profile = found
            log.info("engine: %s at %s", found.profile, self.endpoint.host)
        return found

    @staticmethod
    def _libpod_info(client: docker.DockerClient) -> dict[str, Any] | None:
        """Podman's own `info` (its compatible one does not say whether it is rootless)."""
        try:
            api = client.api  # Podman 4.3 serves it under a version prefix only
            reply = api.get(f"{api.base_url}/v{api.api_version}/libpod/info", timeout=30)
            reply.raise_for_status()
            found = reply.json()
        except Exception as exc:  # requests and json raise several unrelated types
            log.debug("Podman's own info is not readable (%s): taken as rootful", short(exc))
            return None
        return found if isinstance(found, dict) else None

    @property
    def rootless(self) -> bool:
        """Whether the engine runs as an unprivileged user (read once; False when it cannot
        say)."""
        if self._profile is None:
            self._info()
        return self._profile.rootless if self._profile is not None else False

    @property
    def image_store(self) -> str:
        """The engine's image store (read once; CLASSIC_STORE when the engine cannot say)."""
        if self._profile is None:
            self._info()
        return self._profile.image_store if self._profile is not None else CLASSIC_STORE

    @property
    def product(self) -> str:
        """ "Docker" or "Podman" (read once; "Docker" when the engine cannot say)."""
        if self._profile is None:
            self._info()
        return self._profile.product if self._profile is not None else "Docker"

    def labels(self, **more: str) -> dict[str, str]:
        return {MANAGED_LABEL: "1", **self.extra_labels, **more}
