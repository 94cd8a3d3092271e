"""Export RPCs: a project's lock as pylock.toml, its image as an SBOM or a devcontainer.json.

The renderers are pure (envd.model.pylock, sbom, devcontainer); these handlers gather their
inputs: the lock (in sync with envd.yaml), the index's file list for each locked artifact, the
image's fingerprint.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import grpc

from envd import __version__
from envd.daemon.rpc import RpcBase
from envd.errors import NotFound
from envd.gateways.store import ProjectRow
from envd.model.devcontainer import render_devcontainer
from envd.model.lockfile import LockFile
from envd.model.pylock import PYPI_SIMPLE, ArtifactFile, render_pylock
from envd.model.sbom import render_cyclonedx, render_spdx
from envd.v1 import envd_pb2 as pb


class ExportRpc(RpcBase):
    def ExportPylock(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.ExportPylockReply:
        row = self.services.projects.resolve(request.ref)
        outcome = self.services.locker.check(row)
        lock = outcome.lock
        assert lock is not None
        # envd.lock pins each artifact by sha256 only; the index names the files (PEP 691).
        files = self.services.index.files_of(
            (p.index or PYPI_SIMPLE, p.name) for p in lock.python if not p.url
        )
        # A direct URL package's one file is in the lock itself.
        files += tuple(ArtifactFile(p.url, p.hashes[0]) for p in lock.python if p.url)
        return pb.ExportPylockReply(
            pylock=render_pylock(lock, files),
            lock_path=str(outcome.path),
            packages=len(lock.python),
        )

    def ExportSbom(
        self, request: pb.ExportSbomRequest, context: grpc.ServicerContext
    ) -> pb.ExportSbomReply:
        row = self.services.projects.resolve(request.project.ref)
        fingerprint = self.services.fingerprints.for_project(row)
        image = self._image_reference(row, self._current_lock(row))
        spdx = request.format == pb.SBOM_FORMAT_SPDX
        render = render_spdx if spdx else render_cyclonedx
        document = render(
            fingerprint,
            self._current_lock(row),
            row.name,
            timestamp=datetime.now(UTC),
            image=image,
            tool_version=__version__,
        )
        data = json.loads(document)
        components = len(data.get("packages", ())) - 1 if spdx else len(data.get("components", ()))
        return pb.ExportSbomReply(
            document=document,
            format=pb.SBOM_FORMAT_SPDX if spdx else pb.SBOM_FORMAT_CYCLONEDX,
            image=image,
            environment_hash=fingerprint.environment_hash,
            components=components,
        )

    def ExportDevcontainer(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.ExportDevcontainerReply:
        row = self.services.projects.resolve(request.ref)
        spec = self.services.projects.spec(row)
        lock = self._current_lock(row)
        image = self._image_reference(row, lock)
        # envd images run as root; `envctl enter` adds the caller's user at start, which a
        # devcontainer opened on the image as is cannot, so it keeps the image's user.
        text = render_devcontainer(
            name=row.name,
            image=image,
            user="root",
            uid=0,
            env=spec.env,
            ports=spec.ports,
        )
        return pb.ExportDevcontainerReply(devcontainer=text, image=image, project_dir=row.path)

    # ------------------------------------------------------------ pieces

    def _current_lock(self, row: ProjectRow) -> LockFile | None:
        return self.services.projects.lock_state(row).current

    def _image_reference(self, row: ProjectRow, lock: LockFile | None) -> str:
        """The shared image by digest when the lock pins one, else the local image."""
        if lock is not None and lock.shared_image:
            return lock.shared_image
        image = self.services.fingerprints.image_of(row)
        if not image:
            raise NotFound(
                f"project {row.name} has no image yet", hint=f"run `envctl build {row.name}`"
            )
        info = self.services.engine.inspect_image(image)
        if info is None:
            raise NotFound(
                f"image {image} of project {row.name} is not on the engine",
                hint=f"run `envctl build {row.name}`",
            )
        return info.repo_digests[0] if info.repo_digests else image
