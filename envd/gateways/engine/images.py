"""The engine's images: inspect, import, tag, remove, pull, push, save, load."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar, cast

from envd.errors import (
    EnvdError,
    RegistryError,
)
from envd.gateways.engine.connection import EngineConnection
from envd.gateways.engine.errors import engine_error, registry_hint, short
from envd.gateways.engine.records import (
    CONTAINERD_STORE,
    MANAGED_LABEL,
    ImageInfo,
    OutputSink,
    PushResult,
    split_reference,
)
from envd.gateways.engine.saved import (
    ChunkStream,
    SavedImage,
    read_saved_image,
    uncompress_saved_image,
)
from envd.model.dockerfile import quote

T = TypeVar("T")
log = logging.getLogger(__name__)


class ImagesMixin(EngineConnection):
    def inspect_image(self, ref: str) -> ImageInfo | None:
        import docker.errors

        try:
            attrs = self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 404:
                return None
            raise engine_error(exc) from exc
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
            raise engine_error(exc) from exc
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
            raise engine_error(exc) from exc

    def tag(self, image: str, repository: str, tag: str) -> None:
        try:
            self.client.api.tag(image, repository, tag)
        except Exception as exc:
            raise engine_error(exc) from exc

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
            raise engine_error(exc) from exc
        return True

    def list_images(self, label: str = MANAGED_LABEL) -> list[ImageInfo]:
        try:
            summaries = self.client.api.images(filters={"label": label})
        except Exception as exc:
            raise engine_error(exc) from exc
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
                f"image {reference} is not on the engine and cannot be pulled ({short(exc)})",
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
                        hint=registry_hint(str(item["error"])),
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
                f"cannot push {reference}: {short(exc)}", hint=registry_hint(str(exc))
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
                f"cannot ask the registry for the digest of {reference}: {short(exc)}",
                hint=registry_hint(str(exc)),
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
            raise engine_error(exc) from exc
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
            raise RegistryError(f"the engine refused the archive: {short(exc)}") from exc
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
            raise engine_error(exc) from exc
        raw = ChunkStream(chunks)
        try:
            return read_saved_image(cast(IO[bytes], raw), read_layer, skip, skip_sizes)
        except EnvdError:
            raise
        except Exception as exc:  # the stream broke off: the engine or the connection failed
            raise engine_error(exc) from exc
        finally:
            raw.close()


_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")


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
