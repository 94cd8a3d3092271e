"""Share RPCs: share an image, pull or load one with verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from envd.daemon.rpc import RpcBase, streamed
from envd.errors import UsageError
from envd.progress import Reporter
from envd.services.sharing import Received, Shared, check_reference
from envd.v1 import envd_pb2 as pb


def _received(r: Received) -> pb.PullEvent:
    return pb.PullEvent(
        result=pb.PullResult(
            image=r.image,
            image_id=r.image_id,
            project=r.project,
            environment_hash=r.environment_hash,
            verified=True,
        )
    )


class ShareRpc(RpcBase):
    def Share(
        self, request: pb.ShareRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ShareEvent]:
        row = self.services.projects.resolve(request.project.ref)
        if bool(request.to) == bool(request.output):
            raise UsageError("give exactly one of --to REGISTRY/REPO[:TAG] or --output FILE")
        if request.to:
            check_reference(request.to)
        if request.pin and not request.to:
            raise UsageError("--pin needs --to: a lock can only name an image in a registry")

        def work(progress: Reporter) -> Shared:
            if request.to:
                return self.services.sharing.push(row, request.to, request.pin, progress)
            return self.services.sharing.save(row, Path(request.output), progress)

        def result(s: Shared) -> pb.ShareEvent:
            return pb.ShareEvent(
                result=pb.ShareResult(
                    reference=s.reference,
                    digest=s.digest,
                    layers_pushed=s.pushed,
                    layers_skipped=s.skipped,
                    pinned=s.pinned,
                )
            )

        return streamed(work, lambda p: pb.ShareEvent(progress=p), result)

    def Pull(
        self, request: pb.PullRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PullEvent]:
        check_reference(request.reference)
        return streamed(
            lambda progress: self.services.sharing.pull(request.reference, progress),
            lambda p: pb.PullEvent(progress=p),
            _received,
        )

    def Load(
        self, request: pb.LoadRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PullEvent]:
        return streamed(
            lambda progress: self.services.sharing.load(Path(request.path), progress),
            lambda p: pb.PullEvent(progress=p),
            _received,
        )
