"""The engine's volumes, and host folders copied into fresh ones for a remote engine."""

from __future__ import annotations

import tarfile
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from envd.errors import EnvdError
from envd.gateways.engine.containers import ContainersMixin
from envd.gateways.engine.errors import engine_error
from envd.gateways.engine.records import MANAGED_LABEL
from envd.model import names

# Where a bind mount's files are copied into its volume on a remote engine (never started).
_FILL_TARGET = "/envd-fill"


class VolumesMixin(ContainersMixin):
    """Volumes; a volume is filled through a container that is created, never started."""

    def ensure_volume(self, name: str) -> str:
        import docker.errors

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name=name, labels=self.labels())
        except Exception as exc:
            raise engine_error(exc) from exc
        return name

    def copy_to_volume(self, image: str, folder: Path, labels: Mapping[str, str]) -> str:
        """A fresh volume (labelled envd.role=mount) holding a copy of a host folder's files;
        returns its name. Owners become root, modes are kept; symbolic links stay links."""
        import docker.types

        if not folder.is_dir():
            raise EnvdError(
                f"{folder} cannot be mounted on the remote engine at {self.endpoint.host}: "
                "only folders can be copied there"
            )
        name = f"{names.MOUNT_VOLUME_PREFIX}{uuid.uuid4().hex[:20]}"
        api = self.client.api
        volume_labels = self.labels(
            **{
                **dict(labels),
                names.ROLE_LABEL: names.ROLE_MOUNT,
                names.SOURCE_LABEL: str(folder),
            }
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
            raise engine_error(exc) from exc
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
            raise engine_error(exc) from exc

    def list_volumes(self, label: str = MANAGED_LABEL) -> list[tuple[str, dict[str, str]]]:
        """(name, labels) of the volumes carrying label."""
        try:
            found = self.client.api.volumes(filters={"label": label}) or {}
        except Exception as exc:
            raise engine_error(exc) from exc
        return [(str(v["Name"]), dict(v.get("Labels") or {})) for v in found.get("Volumes") or []]


def _tar_folder(folder: Path, out: IO[bytes]) -> None:
    """A folder's contents as a tar (names relative to it), owned by root, modes kept."""

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name, recursive=True, filter=as_root)
