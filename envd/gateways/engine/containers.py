"""The engine's containers: created, started detached (warm environments), inspected, exec'd
into, removed."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, TypeVar

from envd.errors import (
    ContainerError,
    EnvdError,
    NotFound,
)
from envd.gateways.engine.connection import EngineConnection
from envd.gateways.engine.errors import engine_error, short
from envd.gateways.engine.records import MANAGED_LABEL, ContainerInfo, Mount, RunResult
from envd.gateways.engine.saved import ChunkReader

T = TypeVar("T")
log = logging.getLogger(__name__)


def _engine_mounts(mounts: Sequence[Mount]) -> list[Any]:
    """envd's mounts as docker-py's: a volume by name, or a bind of a host path."""
    import docker.types

    return [
        docker.types.Mount(
            target=m.target,
            source=m.source,
            type="volume" if m.volume else "bind",
            read_only=m.read_only,
        )
        for m in mounts
    ]


def _host_config(
    api: Any,
    mounts: Sequence[Mount],
    network: bool,
    device_requests: Sequence[Mapping[str, Any]],
    ports: Sequence[int],
) -> Any:
    """A container's mounts, network, GPUs and ports (published on the loopback only), with an
    init process: the same for every container envd starts."""
    import docker.types

    return api.create_host_config(
        mounts=_engine_mounts(mounts),
        network_mode="bridge" if network else "none",
        device_requests=[docker.types.DeviceRequest(**dict(d)) for d in device_requests] or None,
        port_bindings={p: ("127.0.0.1", p) for p in ports} or None,
        init=True,
    )


class ContainersMixin(EngineConnection):
    def _warm_userns(self, host_config: Any) -> Any:
        """A warm container's user namespace. Rootless Podman maps the host user to the
        container's root and the container's other uids to the user's subordinate ids, so the
        caller's uid there (the agent's, `exec -u`'s) could neither reach the agent's 0700
        folder nor write the project it mounts: `keep-id` maps the caller's uid to itself, as
        Docker (no user namespace) does. Elsewhere: unchanged."""
        if self.product == "Podman" and self.rootless:
            log.debug("rootless Podman: warm containers keep the caller's uid (keep-id)")
            host_config["UsernsMode"] = "keep-id"
        return host_config

    def _create(
        self,
        image: str,
        command: list[str],
        *,
        env: Mapping[str, str] | None,
        mounts: Sequence[Mount],
        network: bool,
        user: str,
        workdir: str,
        labels: Mapping[str, str],
        name: str | None = None,
        device_requests: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
        extra_hosts: Mapping[str, str] | None = None,
        warm: bool = False,
    ) -> str:
        import docker.errors

        api = self.client.api
        host_config = _host_config(api, mounts, network, device_requests, ports)
        if warm:
            host_config = self._warm_userns(host_config)
        try:
            created = api.create_container(
                image,
                command=command,
                environment=dict(env or {}),
                user=user or None,
                working_dir=workdir or None,
                labels=dict(labels),
                host_config=host_config,
                name=name,
                ports=list(ports) or None,
            )
        except docker.errors.ImageNotFound as exc:
            raise NotFound(f"image {image} is not on the engine", hint="build it first") from exc
        return str(created["Id"])

    # ------------------------------------------------------------ long-running containers

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
        """Create and start a detached container (a warm environment)."""
        try:
            container_id = self._create(
                image,
                list(command),
                env=env,
                mounts=mounts,
                network=True,
                user="",
                workdir=workdir,
                labels=self.labels(**dict(labels or {})),
                name=name,
                device_requests=device_requests,
                ports=ports,
                warm=True,
            )
            self.client.api.start(container_id)
        except EnvdError:
            raise
        except Exception as exc:
            raise ContainerError(f"could not start container {name}: {short(exc)}") from exc
        info = self.inspect_container(container_id)
        if info is None:
            raise ContainerError(f"container {name} vanished right after it started")
        return info

    def start_container_as(
        self,
        user: str,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        entrypoint: Sequence[str] = (),
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
        workdir: str = "",
        device_requests: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
    ) -> ContainerInfo:
        """start_container, its first process run as user ("uid:gid"), through entrypoint."""
        import docker.errors

        try:
            api = self.client.api
            host_config = self._warm_userns(_host_config(api, mounts, True, device_requests, ports))
            try:
                created = api.create_container(
                    image,
                    command=list(command),
                    entrypoint=list(entrypoint) or None,
                    user=user or None,
                    working_dir=workdir or None,
                    labels=self.labels(**dict(labels or {})),
                    host_config=host_config,
                    name=name,
                    ports=list(ports) or None,
                )
            except docker.errors.ImageNotFound as exc:
                raise NotFound(
                    f"image {image} is not on the engine", hint="build it first"
                ) from exc
            api.start(str(created["Id"]))
        except EnvdError:
            raise
        except Exception as exc:
            raise ContainerError(f"could not start container {name}: {short(exc)}") from exc
        info = self.inspect_container(str(created["Id"]))
        if info is None:
            raise ContainerError(f"container {name} vanished right after it started")
        return info

    def container_env(self, ref: str) -> dict[str, str]:
        """The environment a `docker exec` in the container starts from (its Config.Env)."""
        import docker.errors

        try:
            attrs = self.client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return {}
        except Exception as exc:
            raise engine_error(exc) from exc
        pairs = (item.split("=", 1) for item in (attrs.get("Config") or {}).get("Env") or [])
        return {p[0]: p[1] for p in pairs if len(p) == 2}

    def inspect_container(self, ref: str) -> ContainerInfo | None:
        import docker.errors

        try:
            attrs = self.client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise engine_error(exc) from exc
        return ContainerInfo(
            id=str(attrs["Id"]),
            name=str(attrs.get("Name", "")).lstrip("/"),
            image=str((attrs.get("Config") or {}).get("Image", "")),
            status=str((attrs.get("State") or {}).get("Status", "")),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
            created=str(attrs.get("Created", "")),
        )

    def container_changes(self, ref: str) -> list[tuple[str, str]]:
        """(path, "added" | "changed" | "removed") for files a container changed in its image,
        as the engine reports them from its writable layer (`docker diff`); nothing runs."""
        kinds = {0: "changed", 1: "added", 2: "removed"}
        try:
            changes = self.client.api.diff(ref) or []
        except Exception as exc:
            raise engine_error(exc) from exc
        return sorted((str(c["Path"]), kinds.get(int(c["Kind"]), "changed")) for c in changes)

    def list_containers(self, label: str = MANAGED_LABEL) -> list[ContainerInfo]:
        try:
            summaries = self.client.api.containers(all=True, filters={"label": label})
        except Exception as exc:
            raise engine_error(exc) from exc
        return [
            ContainerInfo(
                id=str(s["Id"]),
                name=str((s.get("Names") or ["/"])[0]).lstrip("/"),
                image=str(s.get("Image", "")),
                status=str(s.get("State", "")),
                labels=dict(s.get("Labels") or {}),
            )
            for s in summaries
        ]

    def exec_capture(self, container: str, argv: Sequence[str], user: str = "") -> RunResult:
        """Run argv in a running container and collect its output (for probes, not for users)."""
        try:
            api = self.client.api
            exec_id = api.exec_create(container, list(argv), user=user or "")["Id"]
            output = api.exec_start(exec_id)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except Exception as exc:
            raise engine_error(exc) from exc
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return RunResult(exit_code=int(code if code is not None else 1), output=text)

    def running_execs(self, container: str) -> int:
        """How many `docker exec` processes are still running in a container."""
        import docker.errors

        api = self.client.api
        try:
            exec_ids = api.inspect_container(container).get("ExecIDs") or []
        except docker.errors.NotFound:
            return 0
        except Exception as exc:
            raise engine_error(exc) from exc
        running = 0
        for exec_id in exec_ids:
            try:
                running += bool(api.exec_inspect(exec_id).get("Running"))
            except docker.errors.NotFound:
                continue
        return running

    def remove_container(self, ref: str) -> None:
        """Stop and remove a container; a missing one is fine."""
        import docker.errors

        try:
            self.client.api.remove_container(ref, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):  # gone, or removal already in progress
                return
            raise engine_error(exc) from exc

    def copy_into(self, container: str, path: str, files: Mapping[str, bytes]) -> None:
        """Write small files into a container's directory `path` (e.g. a probe script)."""

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
        try:
            self.client.api.put_archive(container, path, buf.getvalue())
        except Exception as exc:
            raise engine_error(exc) from exc

    def read_changes(
        self,
        container_id: str,
        read: Callable[[list[tuple[str, int]], Callable[[str], IO[bytes]]], T],
    ) -> T:
        """Hand `read` what a stopped container changed: the engine's list of changes (path,
        kind: 0 modified, 1 added, 2 deleted) and an opener of the tar the archive API gives
        for one path (members named from that path's last component)."""

        def open_path(path: str) -> IO[bytes]:
            chunks, _ = self.client.api.get_archive(container_id, path, chunk_size=1 << 20)
            return io.BufferedReader(ChunkReader(iter(chunks)), 1 << 20)

        try:
            changes = self.client.api.diff(container_id) or []
            return read([(str(c["Path"]), int(c["Kind"])) for c in changes], open_path)
        except (EnvdError, ValueError):  # (a ContentError from `read` is a ValueError)
            raise
        except Exception as exc:
            raise engine_error(exc) from exc
