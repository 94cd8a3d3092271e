"""The Docker engine: the only module that imports the docker SDK.

Everything envd creates on the engine carries the label `envd.managed=1`, plus the extra labels
the daemon was configured with (tests use these to find and remove what they made).

The engine is the one DOCKER_HOST names, else the Docker context (DOCKER_CONTEXT, else the
current one in ~/.docker/config.json), as the docker CLI picks it. An engine not on a local
socket is remote (`engine_is_remote`): it cannot see this machine's files, so a one-shot
container's host folders are copied to it in volumes (`Engine.run`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from envd.errors import (
    ContainerError,
    EngineUnavailable,
    EnvdError,
    NotFound,
    RegistryError,
    VerificationError,
)
from envd.gateways.files import HashingReader
from envd.model.dockerfile import quote

if TYPE_CHECKING:
    import docker

MANAGED_LABEL = "envd.managed"
OutputSink = Callable[[str], None]
log = logging.getLogger(__name__)

CLASSIC_STORE = "classic"  # the engine's own graph driver: image ID = sha256 of the config
CONTAINERD_STORE = "containerd"  # containerd's image store: image ID = manifest (index) digest
_SNAPSHOTTER = "io.containerd.snapshotter.v1"


DEFAULT_HOST = "unix:///var/run/docker.sock"
# Where a bind mount's files are copied into its volume on a remote engine (never started).
_FILL_TARGET = "/envd-fill"


def engine_is_remote(host: str) -> bool:
    """THE rule: an engine on a local socket shares our filesystem; any other does not.

    unix:// (and npipe://, fd://) are this machine's engine, whose bind mounts see our files;
    tcp:// and ssh:// are another machine (even tcp://127.0.0.1 may be a dockerd in its own
    mount namespace), so host paths must be copied to it.
    """
    scheme = host.split("://", 1)[0] if "://" in host else "unix"
    return scheme not in ("unix", "http+unix", "npipe", "fd")


@dataclass(frozen=True)
class EngineEndpoint:
    """Which engine envd talks to, resolved the way the docker CLI does, before connecting."""

    host: str  # "unix:///var/run/docker.sock", "tcp://gpu1:2376", "ssh://me@gpu1"
    context: str = ""  # the Docker context that named it; "" when DOCKER_HOST did
    tls: Any = None  # docker.tls.TLSConfig, or None
    error: str = ""  # why it cannot be used (an unknown context); "" when it can
    hint: str = ""

    @property
    def remote(self) -> bool:
        return engine_is_remote(self.host)

    @property
    def source(self) -> str:
        """How it was chosen, for `envctl info`: "DOCKER_HOST" or "context NAME"."""
        return f"context {self.context}" if self.context else "DOCKER_HOST"


def resolve_endpoint(environ: Mapping[str, str] | None = None) -> EngineEndpoint:
    """DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH) when set; else the Docker
    context DOCKER_CONTEXT names, else the current one in ~/.docker/config.json."""
    import docker.context
    import docker.errors
    import docker.utils
    from docker.context.config import get_current_context_name

    env = dict(os.environ if environ is None else environ)
    if env.get("DOCKER_HOST"):
        try:
            params = docker.utils.kwargs_from_env(environment=env)
        except docker.errors.DockerException as exc:  # TLS asked for, but no certificates
            return EngineEndpoint(
                host=env["DOCKER_HOST"],
                error=f"cannot use TLS for DOCKER_HOST={env['DOCKER_HOST']}: {_short(exc)}",
                hint="DOCKER_CERT_PATH (default ~/.docker) must hold ca.pem, cert.pem and "
                "key.pem; or unset DOCKER_TLS_VERIFY",
            )
        return EngineEndpoint(host=str(params["base_url"]), tls=params.get("tls"))
    named_by = "DOCKER_CONTEXT" if env.get("DOCKER_CONTEXT") else "~/.docker/config.json"
    name = env.get("DOCKER_CONTEXT") or ""
    try:
        if not name:
            name = str(get_current_context_name() or "default")
        if name == "default":
            return EngineEndpoint(host=DEFAULT_HOST, context="default")
        ctx = docker.context.ContextAPI.get_context(name)
    except (docker.errors.DockerException, OSError, ValueError, KeyError) as exc:
        return EngineEndpoint(
            host="",
            context=name,
            error=f"the Docker context {name!r} ({named_by}) cannot be read: {_short(exc)}",
            hint="check it with `docker context inspect NAME`, or set DOCKER_HOST",
        )
    if ctx is None or not ctx.Host:
        return EngineEndpoint(
            host="",
            context=name,
            error=f"the Docker context {name!r} that {named_by} names is not known",
            hint="`docker context ls` lists the known ones; pick one with DOCKER_CONTEXT=NAME "
            "or `docker context use NAME`, or set DOCKER_HOST",
        )
    return EngineEndpoint(host=str(ctx.Host), context=name, tls=ctx.TLSConfig)


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

    @property
    def profile(self) -> str:
        """ "Docker 26.1.5 (API 1.45), containerd image store": what the engine is."""
        what = f"{self.product or 'Docker'} {self.version} (API {self.api_version})"
        return f"{what}, {self.image_store} image store" if self.image_store else what

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


@dataclass
class _Tail:
    limit: int = 200
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]

    def text(self) -> str:
        return "\n".join(self.lines)


class Engine:
    """A thin, typed face over docker-py. Connects lazily, so importing this costs nothing."""

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
                        f"the Docker engine at {where.host} ({where.source}) does not answer "
                        f"({_short(exc)})",
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
            return EngineInfo(reachable=False, error=_short(exc))
        discovered = info.get("DiscoveredDevices") or []
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
            product=engine_product(version),
            image_store=image_store(info),
        )
        if self._profile is None:  # once per daemon start: what the engine is decides paths
            self._profile = found
            log.info("engine: %s at %s", found.profile, self.endpoint.host)
        return found

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

    # ------------------------------------------------------------ images

    def inspect_image(self, ref: str) -> ImageInfo | None:
        import docker.errors

        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise _engine_error(exc) from exc
        config = attrs.get("Config") or {}
        return ImageInfo(
            id=str(attrs["Id"]),
            tags=tuple(attrs.get("RepoTags") or ()),
            labels=dict(config.get("Labels") or {}),
            size=int(attrs.get("Size") or 0),
            repo_digests=tuple(attrs.get("RepoDigests") or ()),
            layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
            env=tuple(config.get("Env") or ()),
        )

    def image_exists(self, ref: str) -> bool:
        return self.inspect_image(ref) is not None

    def import_tarball(
        self,
        path: str | Path,
        repository: str,
        tag: str,
        labels: Mapping[str, str] | None = None,
        changes: Sequence[str] = (),
    ) -> str:
        """Import a root filesystem tarball as an image; returns the image ID."""
        all_labels = self.labels(**dict(labels or {}))
        instructions = [
            *changes,
            *(f"LABEL {json.dumps(k)}={quote(v)}" for k, v in sorted(all_labels.items())),
        ]
        try:
            out = self.client.api.import_image_from_file(
                str(path), repository=repository, tag=tag, changes=instructions
            )
        except Exception as exc:
            raise _engine_error(exc) from exc
        image = self.inspect_image(f"{repository}:{tag}")
        reported = _imported_id(str(out))
        if image is None and reported:
            # Podman (4.3) imports under `repository:latest`, ignoring the tag it was given:
            # the image is found by the ID it reports, and tagged here.
            log.debug("engine imported %s without tag %s; tagging by ID", reported, tag)
            self.tag(reported, repository, tag)
            image = self.inspect_image(f"{repository}:{tag}")
        if image is None:
            raise EnvdError(f"importing {path} into the engine failed: {str(out)[-500:]}")
        return image.id

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        """An image's layer diff-ids as the engine computed them; None when it has no such image."""
        info = self.inspect_image(ref)
        return info.layers if info is not None else None

    def image_ids(self) -> set[str]:
        """Every image ID the engine holds (to tell a newly received image from a known one)."""
        try:
            return {str(i) for i in self.client.api.images(all=True, quiet=True)}
        except Exception as exc:
            raise _engine_error(exc) from exc

    def tag(self, image: str, repository: str, tag: str) -> None:
        try:
            self.client.api.tag(image, repository, tag)
        except Exception as exc:
            raise _engine_error(exc) from exc

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        """Remove an image (tag or ID); False when it did not exist."""
        import docker.errors

        try:
            self.client.api.remove_image(ref, force=force, noprune=False)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return False
            raise _engine_error(exc) from exc
        return True

    def list_images(self, label: str = MANAGED_LABEL) -> list[ImageInfo]:
        try:
            summaries = self.client.api.images(filters={"label": label})
        except Exception as exc:
            raise _engine_error(exc) from exc
        return [
            ImageInfo(
                id=str(s["Id"]),
                tags=tuple(t for t in (s.get("RepoTags") or ()) if t != "<none>:<none>"),
                labels=dict(s.get("Labels") or {}),
                size=int(s.get("Size") or 0),
                repo_digests=tuple(s.get("RepoDigests") or ()),
                layers=(),
            )
            for s in summaries
        ]

    def pull(self, reference: str) -> ImageInfo:
        """Pull an image; an unreachable registry or unknown image is a RegistryError."""
        try:
            for _ in self.client.api.pull(reference, stream=True, decode=True):
                pass
        except Exception as exc:
            raise RegistryError(
                f"image {reference} is not on the engine and cannot be pulled ({_short(exc)})",
                hint="check the reference and the registry, or build a local base "
                "with `base: {debian: bookworm}`",
            ) from exc
        image = self.inspect_image(reference)
        if image is None:
            raise RegistryError(f"pulling {reference} finished, but the image is not there")
        return image

    def push(self, reference: str, on_progress: OutputSink | None = None) -> PushResult:
        """Push a tagged image with Docker's stored credentials; count layers moved."""
        repository, tag = split_reference(reference)
        pushed: set[str] = set()
        skipped: set[str] = set()
        digest = said = ""
        try:
            for item in self.client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in item:
                    raise RegistryError(
                        f"pushing {reference} failed: {item['error']}",
                        hint=_registry_hint(str(item["error"])),
                    )
                status, layer = str(item.get("status", "")), str(item.get("id", ""))
                if status == "Pushed":
                    pushed.add(layer)
                elif status == "Layer already exists":
                    skipped.add(layer)
                aux = item.get("aux") or {}
                digest = str(aux.get("Digest", digest))
                if found := _PUSHED_DIGEST.search(status):
                    said = found.group(1)
                if on_progress is not None and status:
                    on_progress(f"{layer}: {status}".strip(": "))
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(
                f"cannot push {reference}: {_short(exc)}", hint=_registry_hint(str(exc))
            ) from exc
        if not digest and said and self.product == "Podman":
            # Podman ends a push with no aux digest, only its "digest: ... size: ..." line.
            log.debug("no aux digest in Podman's push of %s: taken from its status", reference)
            digest = said
        if not digest and self.image_store == CONTAINERD_STORE:
            # Docker 26's containerd store ends a push without the aux digest: ask the registry.
            log.debug("no digest in the push stream of %s: asking the registry", reference)
            digest = self._registry_digest(reference)
        if not digest:
            raise RegistryError(f"the registry did not return a digest for {reference}")
        return PushResult(digest=digest, pushed=len(pushed), skipped=len(skipped))

    def _registry_digest(self, reference: str) -> str:
        """The digest the registry serves for reference, as the engine resolves it."""
        try:
            found = self.client.api.inspect_distribution(reference)
        except Exception as exc:
            raise RegistryError(
                f"cannot ask the registry for the digest of {reference}: {_short(exc)}",
                hint=_registry_hint(str(exc)),
            ) from exc
        return str((found.get("Descriptor") or {}).get("digest", ""))

    def loaded_image(self, config_id: str, loaded: Sequence[str]) -> str:
        """The engine's ID of the image it loaded from an untagged archive whose config is
        config_id: that digest on the classic store; on the containerd store the ID is the
        digest of the manifest the engine made, which only its load report names."""
        if self.image_store != CONTAINERD_STORE:
            return config_id
        ids = [ref for ref in loaded if ref.startswith("sha256:")]
        if len(ids) != 1:
            raise RegistryError(
                f"the engine did not say which image it loaded for the config {config_id} "
                f"(it reported {', '.join(loaded) or 'nothing'})"
            )
        log.debug("loaded config %s as %s (containerd image store)", config_id, ids[0])
        return ids[0]

    def save(self, image: str, path: Path) -> None:
        """Write `docker save` of one image to path, its layers uncompressed.

        The containerd image store saves an OCI layout whose layer blobs are gzip (named by
        the compressed digest); those are rewritten as blobs named by their diff-id, each
        checked against the config, so an archive has the same layers whatever the store."""
        raw = path.with_name(f".{path.name}.engine")
        try:
            with open(raw, "wb") as f:
                for chunk in self.client.api.get_image(image, chunk_size=1 << 20):
                    f.write(chunk)
            if uncompress_saved_image(raw, path):
                log.debug("the engine saved %s compressed or in Podman's layout: rewritten", image)
        except EnvdError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            raw.unlink(missing_ok=True)

    def load(self, archive: Iterator[bytes]) -> list[str]:
        """`docker load` a tar archive given as a stream of chunks (sent as they come, never
        held whole in memory); returns the loaded image references."""
        loaded: list[str] = []
        try:
            for item in self.client.api.load_image(archive):
                if "error" in item:
                    raise RegistryError(f"the engine refused the archive: {item['error']}")
                stream = str(item.get("stream", ""))
                for prefix in ("Loaded image ID: ", "Loaded image: "):
                    if stream.startswith(prefix):
                        loaded.append(stream[len(prefix) :].strip())
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"the engine refused the archive: {_short(exc)}") from exc
        return loaded

    def read_image_layers(
        self,
        image: str,
        read_layer: Callable[[IO[bytes]], T],
        skip: Collection[str] = (),
        skip_sizes: Collection[int] = (),
    ) -> SavedImage[T]:
        """Stream `docker save` of one image and hand each layer tar to read_layer.

        Nothing is written to disk. Every layer's sha256 is checked against the config's
        diff-id (VerificationError on a mismatch). A layer whose blob digest is in `skip` and
        is known before reading (OCI layout) is hashed but not given to read_layer.
        """
        try:
            chunks = self.client.api.get_image(image, chunk_size=1 << 20)
        except Exception as exc:
            raise _engine_error(exc) from exc
        raw = ChunkReader(chunks)
        try:
            return read_saved_image(io.BufferedReader(raw, 1 << 20), read_layer, skip, skip_sizes)
        except EnvdError:
            raise
        except Exception as exc:  # the stream broke off: the engine or the connection failed
            raise _engine_error(exc) from exc
        finally:
            raw.close()

    # ------------------------------------------------------------ volumes

    def ensure_volume(self, name: str) -> str:
        import docker.errors

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name=name, labels=self.labels())
        except Exception as exc:
            raise _engine_error(exc) from exc
        return name

    # ------------------------------------------------------------ one-shot containers

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        network: bool = True,
        user: str = "",
        workdir: str = "",
        labels: Mapping[str, str] | None = None,
        on_output: OutputSink | None = None,
        commit: CommitSpec | None = None,
        timeout: float | None = None,
        device_requests: Sequence[Mapping[str, Any]] = (),
    ) -> RunResult:
        """Run argv in a fresh container and wait; optionally commit it as an image.

        The container is always removed, also when the caller is interrupted. On a remote
        engine a read-only bind mount of a host folder becomes a copy of it in a fresh volume
        (see `_materialise`), removed with the container.
        """
        container_id = ""
        tail = _Tail()
        volumes: list[str] = []
        try:
            mounts, volumes = self._materialise(image, mounts, labels or {})
            container_id = self._create(
                image,
                list(argv),
                env=env,
                mounts=mounts,
                network=network,
                user=user,
                workdir=workdir,
                labels=self.labels(**dict(labels or {})),
                device_requests=device_requests,
            )
            api = self.client.api
            api.start(container_id)
            for line in _lines(api.logs(container_id, stream=True, follow=True)):
                tail.add(line)
                if on_output is not None:
                    on_output(line)
            status = api.wait(container_id, timeout=timeout)
            code = int(status.get("StatusCode", 1))
            result = RunResult(exit_code=code, output=tail.text(), container_id=container_id)
            if code == 0 and commit is not None:
                committed = api.commit(
                    container_id,
                    repository=commit.repository,
                    tag=commit.tag,
                    changes=commit.instructions(self.labels(**dict(commit.labels))),
                )
                result.image_id = str(committed["Id"])
            return result
        except EnvdError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            if container_id:
                self.remove_container(container_id)
            for volume in volumes:
                self.remove_volume(volume)

    def _materialise(
        self, image: str, mounts: Sequence[Mount], labels: Mapping[str, str]
    ) -> tuple[list[Mount], list[str]]:
        """The mounts as a remote engine can make them, and the volumes made for them.

        A local engine binds our folders as they are. A remote one cannot see them: each
        folder's files are copied into a fresh labelled volume (through a container of `image`
        that is created, never started, and removed), mounted read-only where the folder was.
        Volumes are never committed, so nothing copied (the CA bundle) lands in an image.
        """
        if not self.remote or all(m.volume for m in mounts):
            return list(mounts), []
        out: list[Mount] = []
        made: list[str] = []
        try:
            for m in mounts:
                if m.volume:
                    out.append(m)
                    continue
                if not m.read_only:  # what the container writes would never come back
                    raise EnvdError(
                        f"{m.source} cannot be mounted writable on the remote engine at "
                        f"{self.endpoint.host}: only read-only folders are copied there"
                    )
                made.append(self.copy_to_volume(image, Path(m.source), labels))
                out.append(Mount(made[-1], m.target, read_only=True, volume=True))
        except BaseException:
            for volume in made:
                self.remove_volume(volume)
            raise
        return out, made

    def copy_to_volume(self, image: str, folder: Path, labels: Mapping[str, str]) -> str:
        """A fresh volume (labelled envd.role=mount) holding a copy of a host folder's files;
        returns its name. Owners become root, modes are kept; symbolic links stay links."""
        import docker.types

        if not folder.is_dir():
            raise EnvdError(
                f"{folder} cannot be mounted on the remote engine at {self.endpoint.host}: "
                "only folders can be copied there"
            )
        name = f"envd-mnt-{uuid.uuid4().hex[:20]}"
        api = self.client.api
        volume_labels = self.labels(
            **{**dict(labels), "envd.role": "mount", "envd.source": str(folder)}
        )
        filler = ""
        try:
            api.create_volume(name=name, labels=volume_labels)
            host_config = api.create_host_config(
                mounts=[docker.types.Mount(_FILL_TARGET, name, type="volume", no_copy=True)],
                network_mode="none",
            )
            filler = str(
                api.create_container(
                    image,
                    command=["true"],
                    labels=volume_labels,
                    host_config=host_config,
                    network_disabled=True,
                )["Id"]
            )
            with tempfile.TemporaryFile() as archive:
                _tar_folder(folder, archive)
                archive.seek(0)
                if not api.put_archive(filler, _FILL_TARGET, archive):
                    raise EnvdError(f"the engine refused the copy of {folder}")
        except BaseException as exc:
            if filler:
                self.remove_container(filler)
            self.remove_volume(name)
            if isinstance(exc, EnvdError) or not isinstance(exc, Exception):
                raise
            raise _engine_error(exc) from exc
        self.remove_container(filler)
        return name

    def remove_volume(self, name: str) -> None:
        """Remove a volume; a missing one is fine."""
        import docker.errors

        try:
            self.client.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return
            raise _engine_error(exc) from exc

    def list_volumes(self, label: str = MANAGED_LABEL) -> list[tuple[str, dict[str, str]]]:
        """(name, labels) of the volumes carrying label."""
        try:
            found = self.client.api.volumes(filters={"label": label}) or {}
        except Exception as exc:
            raise _engine_error(exc) from exc
        return [(str(v["Name"]), dict(v.get("Labels") or {})) for v in found.get("Volumes") or []]

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
    ) -> str:
        import docker.errors
        import docker.types

        api = self.client.api
        host_config = api.create_host_config(
            mounts=[
                docker.types.Mount(
                    target=m.target,
                    source=m.source,
                    type="volume" if m.volume else "bind",
                    read_only=m.read_only,
                )
                for m in mounts
            ],
            network_mode="bridge" if network else "none",
            device_requests=[docker.types.DeviceRequest(**dict(d)) for d in device_requests]
            or None,
            port_bindings={p: ("127.0.0.1", p) for p in ports} or None,
            init=True,
        )
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
            )
            self.client.api.start(container_id)
        except EnvdError:
            raise
        except Exception as exc:
            raise ContainerError(f"could not start container {name}: {_short(exc)}") from exc
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
        import docker.types

        try:
            api = self.client.api
            host_config = api.create_host_config(
                mounts=[
                    docker.types.Mount(
                        target=m.target,
                        source=m.source,
                        type="volume" if m.volume else "bind",
                        read_only=m.read_only,
                    )
                    for m in mounts
                ],
                network_mode="bridge",
                device_requests=[docker.types.DeviceRequest(**dict(d)) for d in device_requests]
                or None,
                port_bindings={p: ("127.0.0.1", p) for p in ports} or None,
                init=True,
            )
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
            raise ContainerError(f"could not start container {name}: {_short(exc)}") from exc
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
            raise _engine_error(exc) from exc
        pairs = (item.split("=", 1) for item in (attrs.get("Config") or {}).get("Env") or [])
        return {p[0]: p[1] for p in pairs if len(p) == 2}

    def inspect_container(self, ref: str) -> ContainerInfo | None:
        import docker.errors

        try:
            attrs = self.client.api.inspect_container(ref)
        except docker.errors.NotFound:
            return None
        except Exception as exc:
            raise _engine_error(exc) from exc
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
            raise _engine_error(exc) from exc
        return sorted((str(c["Path"]), kinds.get(int(c["Kind"]), "changed")) for c in changes)

    def list_containers(self, label: str = MANAGED_LABEL) -> list[ContainerInfo]:
        try:
            summaries = self.client.api.containers(all=True, filters={"label": label})
        except Exception as exc:
            raise _engine_error(exc) from exc
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
            raise _engine_error(exc) from exc
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
            raise _engine_error(exc) from exc
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
            raise _engine_error(exc) from exc

    def copy_into(self, container: str, path: str, files: Mapping[str, bytes]) -> None:
        """Write small files into a container's directory `path` (e.g. a probe script)."""
        import tarfile

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
            raise _engine_error(exc) from exc


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


def _registry_hint(text: str) -> str:
    lowered = text.lower()
    if "unauthorized" in lowered or "authentication required" in lowered:
        return "log in first: `docker login REGISTRY` (envd uses Docker's stored credentials)"
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered:
        return "is the registry running and reachable from the engine?"
    return "check the registry address and your access to it"


@dataclass(frozen=True)
class CommitSpec:
    """How a finished step container becomes an image."""

    repository: str
    tag: str
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cmd: Sequence[str] = ()
    workdir: str = ""

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


def _imported_id(stream: str) -> str:
    """The image ID an import's answer ends with ("" when it names none)."""
    found = ""
    for line in stream.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            for key in ("id", "status"):
                value = str(event.get(key) or "")
                if value.startswith("sha256:"):
                    found = value
    return found


def engine_product(version: Mapping[str, Any]) -> str:
    """ "Podman" when the version's components name Podman's engine, else "Docker"."""
    names = [str(c.get("Name", "")) for c in version.get("Components") or () if isinstance(c, dict)]
    return "Podman" if any("podman" in n.lower() for n in names) else "Docker"


def _tar_folder(folder: Path, out: IO[bytes]) -> None:
    """A folder's contents as a tar (names relative to it), owned by root, modes kept."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name, recursive=True, filter=as_root)


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _short(exc: BaseException) -> str:
    # An API error's text leads with the request URL (long: a commit's changes); its
    # explanation is what the engine said.
    explanation = getattr(exc, "explanation", None)
    status = getattr(exc, "status_code", None)
    if isinstance(explanation, str) and explanation.strip():
        return (f"{status} " if status else "") + explanation.strip()[:300]
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def _engine_error(exc: BaseException) -> EnvdError:
    """Map an SDK exception to the error root without inspecting message text for meaning."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, EnvdError):
        return exc
    if isinstance(
        exc, requests.exceptions.ConnectionError | docker.errors.DockerException
    ) and not isinstance(exc, docker.errors.APIError):
        return EngineUnavailable(
            f"the Docker engine does not answer ({_short(exc)})",
            hint="start it with `make engine` (or `dockerd &`), then retry",
        )
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 404:
        return NotFound(_short(exc))
    return EnvdError(f"the Docker engine refused: {_short(exc)}")


# ---------------------------------------------------------------- `docker save` archives


def uncompress_saved_image(raw: Path, out: Path) -> bool:
    """`docker save` output at raw, written to out with every compressed layer uncompressed
    (named `blobs/sha256/<diff-id>`, checked against the config's diff-ids); manifest.json
    names them, and the OCI index, which names the compressed manifest, is left out.
    Returns False (raw moved to out as it is) when no layer is compressed."""
    with tarfile.open(raw, mode="r:") as tar:
        try:
            entry = json.loads(_member_bytes(tar, "manifest.json"))[0]
            config_name = str(entry["Config"])
            config_bytes = _member_bytes(tar, config_name)
            diff_ids = [str(d) for d in json.loads(config_bytes)["rootfs"]["diff_ids"]]
            layer_names = [str(n) for n in entry["Layers"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            why = f"the engine's image archive has no usable manifest ({exc})"
            raise VerificationError(why) from exc
        if len(layer_names) != len(diff_ids):
            raise VerificationError("the engine's image archive lists layers its config does not")
        heads = [_member_head(tar, name) for name in layer_names]
        # Podman names layers `<diff-id>.tar` (not a layout envd's archives take): rewritten too.
        podman = any(_DIGEST_TAR.fullmatch(name) for name in layer_names)
        if not podman and not any(h.startswith((_GZIP_MAGIC, _ZSTD_MAGIC)) for h in heads):
            os.replace(raw, out)
            return False
        with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as dest:
            _add_bytes(dest, config_name, config_bytes)
            names: list[str] = []
            for name, diff_id, head in zip(layer_names, diff_ids, heads, strict=True):
                names.append(f"blobs/sha256/{diff_id.removeprefix('sha256:')}")
                if names[-1] in names[:-1]:
                    continue  # a layer repeated in the image is stored once
                _add_layer(tar, dest, name, names[-1], diff_id, head, out.parent)
            entry = {"Config": config_name, "RepoTags": entry.get("RepoTags"), "Layers": names}
            _add_bytes(dest, "manifest.json", json.dumps([entry]).encode())
    return True


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        member = tar.extractfile(posixpath.normpath(name))
    except KeyError:
        member = None
    if member is None:
        raise VerificationError(f"{name} is missing from the engine's image archive")
    return member


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    data = _member(tar, name).read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise VerificationError(f"{name} in the engine's image archive is too large")
    return data


def _member_head(tar: tarfile.TarFile, name: str) -> bytes:
    return _member(tar, name).read(4)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(posixpath.normpath(name))
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


def _add_layer(
    tar: tarfile.TarFile,
    dest: tarfile.TarFile,
    name: str,
    to: str,
    diff_id: str,
    head: bytes,
    scratch: Path,
) -> None:
    """One layer, uncompressed (spooled beside the archive to learn its size) and checked."""
    if head.startswith(_ZSTD_MAGIC):
        raise VerificationError("zstd-compressed layers are not supported")
    source: IO[bytes] = _member(tar, name)
    with tempfile.TemporaryFile(dir=scratch) as spool:
        if head.startswith(_GZIP_MAGIC):
            source = cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
        digest = hashlib.sha256()
        try:
            while block := source.read(1 << 20):
                digest.update(block)
                spool.write(block)
        except (OSError, EOFError) as exc:
            raise VerificationError(f"layer {name} of the engine's archive: {exc}") from exc
        if "sha256:" + digest.hexdigest() != diff_id:
            raise VerificationError(
                f"layer {name} of the engine's archive hashes to sha256:{digest.hexdigest()}, "
                f"but its config says {diff_id}"
            )
        info = tarfile.TarInfo(to)
        info.size, info.mode = spool.tell(), 0o444
        spool.seek(0)
        dest.addfile(info, spool)


T = TypeVar("T")
_MAX_JSON = 16 << 20  # one manifest, index or config
_MAX_JSON_TOTAL = 64 << 20  # all JSON kept from one archive
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIGEST_TAR = re.compile(r"[0-9a-f]{64}\.tar")  # Podman's name for a layer in a save
_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")


@dataclass(frozen=True)
class SavedImage(Generic[T]):
    image_id: str  # sha256:<config digest>
    diff_ids: tuple[str, ...]  # bottom first, each one checked against the bytes read
    layers: tuple[T | None, ...]  # read_layer's result per diff-id; None where skipped
    sizes: tuple[int, ...] = ()  # each layer's size as stored in the archive
    blobs: tuple[str, ...] = ()  # each layer's digest as stored (compressed on containerd's store)


@dataclass
class _LayerRead(Generic[T]):
    blob_digest: str  # sha256 of the member as stored (compressed or not)
    diff_id: str  # sha256 of the uncompressed tar
    result: T | None
    error: str = ""
    size: int = 0


class ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (the engine's HTTP response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()
        super().close()


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Peeked:
    """A stream whose first bytes were already read."""

    def __init__(self, head: bytes, rest: _Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data + self._rest.read(size - len(data)) if len(data) < size else data
        return self._rest.read(size)


def _read_layer(
    member: _Readable, read_layer: Callable[[IO[bytes]], T], parse: bool
) -> _LayerRead[T]:
    outer = HashingReader(member)
    head = outer.read(4)
    source: _Readable = _Peeked(head, outer)
    if head.startswith(_ZSTD_MAGIC):
        outer.drain()
        return _LayerRead("", "", None, error="zstd-compressed layers are not supported")
    gz: gzip.GzipFile | None = None
    if head.startswith(_GZIP_MAGIC):
        gz = gzip.GzipFile(fileobj=cast(IO[bytes], source), mode="rb")
        source = gz
    inner = HashingReader(source)
    result: T | None = None
    error = ""
    try:
        if parse:
            result = read_layer(cast(IO[bytes], inner))
        diff_id = "sha256:" + inner.drain()
    except (ValueError, OSError, EOFError, tarfile.TarError) as exc:
        error, diff_id = f"{type(exc).__name__}: {exc}", ""
    finally:
        if gz is not None:
            gz.close()
    return _LayerRead("sha256:" + outer.drain(), diff_id, result, error)


def read_saved_image(
    archive: IO[bytes],
    read_layer: Callable[[IO[bytes]], T],
    skip: Collection[str] = (),
    skip_sizes: Collection[int] = (),
) -> SavedImage[T]:
    """Read a `docker save` tar in one pass: legacy (`<id>/layer.tar`) or OCI (`blobs/sha256/`).

    A layer already known is only hashed, not read: by its digest in the OCI layout; in the
    legacy layout (which names layers by v1 id) by its size among `skip_sizes`. A guess by size
    that hashes to an unknown layer comes back unread (None): the caller reads again.

    The archive lists layers before manifest.json, so every layer is read as it passes (the
    legacy layout names layers by a v1 id, not by digest); JSON members are kept (bounded) and
    blobs that look like JSON are kept in memory to be told apart once manifest.json is read.
    """
    layers: dict[str, _LayerRead[T]] = {}
    jsons: dict[str, bytes] = {}
    links: dict[str, str] = {}
    json_total = 0
    try:
        with tarfile.open(fileobj=archive, mode="r|") as outer:
            for info in outer:
                name = posixpath.normpath(info.name)
                if info.issym() or info.islnk():
                    base = posixpath.dirname(name) if info.issym() else ""
                    links[name] = posixpath.normpath(posixpath.join(base, info.linkname))
                    continue
                if not info.isfile():
                    continue
                member = outer.extractfile(info)
                if member is None:
                    continue
                is_blob = name.startswith("blobs/")
                # Podman (containers/image's docker-archive) writes each layer as
                # `<diff-id>.tar` at the top, `<id>/layer.tar` being a link to it.
                by_digest = is_blob or _DIGEST_TAR.fullmatch(name) is not None
                if name.endswith("/layer.tar") or by_digest:
                    head = member.read(1)
                    if is_blob and head == b"{" and info.size <= _MAX_JSON:
                        json_total += info.size
                        if json_total > _MAX_JSON_TOTAL:
                            raise VerificationError("the image archive holds too much metadata")
                        jsons[name] = head + member.read()
                        continue
                    digest = "sha256:" + posixpath.basename(name).removesuffix(".tar")
                    parse = digest not in skip if by_digest else info.size not in skip_sizes
                    read = _read_layer(_Peeked(head, member), read_layer, parse)
                    read.size = info.size
                    layers[name] = read
                elif name.endswith(".json") or name == "index.json":
                    if info.size > _MAX_JSON:
                        raise VerificationError(f"{name} in the image archive is too large")
                    json_total += info.size
                    if json_total > _MAX_JSON_TOTAL:
                        raise VerificationError("the image archive holds too much metadata")
                    jsons[name] = member.read()
    except tarfile.TarError as exc:
        raise VerificationError(f"the engine's image archive is not a readable tar: {exc}") from exc
    return _assemble(layers, jsons, links, read_layer)


def _assemble(
    layers: dict[str, _LayerRead[T]],
    jsons: dict[str, bytes],
    links: dict[str, str],
    read_layer: Callable[[IO[bytes]], T],
) -> SavedImage[T]:
    def resolve(name: str) -> str:
        name = posixpath.normpath(name)
        for _ in range(8):
            if name not in links:
                break
            name = links[name]
        return name

    try:
        manifest = json.loads(jsons[resolve("manifest.json")])
        entry = manifest[0]
        config_name = resolve(str(entry["Config"]))
        layer_names = [resolve(str(n)) for n in entry["Layers"]]
        config_bytes = jsons[config_name]
        config = json.loads(config_bytes)
        diff_ids = tuple(str(d) for d in config["rootfs"]["diff_ids"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise VerificationError(f"the image archive has no usable manifest ({exc})") from exc
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    expected = posixpath.basename(config_name).removesuffix(".json")
    if config_digest != "sha256:" + expected:
        raise VerificationError(f"the image config does not match its name {config_name}")
    if len(layer_names) != len(diff_ids):
        raise VerificationError(
            f"the manifest lists {len(layer_names)} layers, the config {len(diff_ids)}"
        )
    results: list[T | None] = []
    sizes: list[int] = []
    blobs: list[str] = []
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        read = layers.get(name)
        if read is None and name in jsons:  # a small blob kept in memory: read it now
            read = _read_layer(io.BytesIO(jsons[name]), read_layer, True)
        if read is None:
            raise VerificationError(f"layer {name} is missing from the image archive")
        if read.error:
            raise VerificationError(f"layer {diff_id} cannot be read: {read.error}")
        if name.startswith("blobs/") and read.blob_digest != "sha256:" + posixpath.basename(name):
            raise VerificationError(f"blob {name} does not match its digest")
        if read.diff_id != diff_id:
            raise VerificationError(
                f"layer {name} hashes to {read.diff_id}, but the image says {diff_id}"
            )
        results.append(read.result)
        sizes.append(read.size)
        blobs.append(read.blob_digest)
    return SavedImage(config_digest, diff_ids, tuple(results), tuple(sizes), tuple(blobs))
