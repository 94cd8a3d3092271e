"""Build RPCs: build, export, images, gc."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from envd.daemon.rpc import RpcBase, streamed
from envd.progress import Reporter
from envd.services.builder import BuildOutcome
from envd.services.images import ImageEntry
from envd.v1 import envd_pb2 as pb

KEPT_KIND = "run file"  # a GcReply entry that is a kept run file, not an image


def build_result(outcome: BuildOutcome, environment_hash: str = "") -> pb.BuildResult:
    return pb.BuildResult(
        image=outcome.image,
        image_id=outcome.image_id,
        steps=[
            pb.PlanStep(name=s.name, key=s.key, cached=s.cached, summary=s.summary)
            for s in outcome.steps
        ],
        cached=outcome.cached,
        elapsed_s=outcome.elapsed_s,
        environment_hash=environment_hash,
    )


class BuildRpc(RpcBase):
    def Build(
        self, request: pb.BuildRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.BuildEvent]:
        row = self.services.projects.resolve(request.project.ref)

        def work(progress: Reporter) -> BuildOutcome:
            return self.services.builder.build(row, progress, dry_run=request.dry_run)

        return streamed(
            work,
            lambda p: pb.BuildEvent(progress=p),
            lambda o: pb.BuildEvent(
                result=build_result(o, self.services.fingerprints.hashes(o.image_id)[0])
            ),
        )

    def ExportDockerfile(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.ExportDockerfileReply:
        from envd.model.dockerfile import render

        row = self.services.projects.resolve(request.ref)
        lock = self.services.locker.check(row).lock
        assert lock is not None
        plan = self.services.builder.plan(row, lock)
        return pb.ExportDockerfileReply(
            dockerfile=render(plan, lock), requirements=plan.requirements
        )

    def ListImages(
        self, request: pb.ListImagesRequest, context: grpc.ServicerContext
    ) -> pb.ListImagesReply:
        return pb.ListImagesReply(images=[_image(r) for r in self.services.images.entries()])

    def Gc(self, request: pb.GcRequest, context: grpc.ServicerContext) -> pb.GcReply:
        images = self.services.images
        removed = images.collect_garbage(
            keep_storage=request.keep_storage_bytes,
            keep_duration=request.keep_duration_s,
            dry_run=request.dry_run,
        )
        budget = None
        if request.keep_storage_bytes:  # kept run files share the budget with the images
            gone = {r.image for r in removed}
            left = sum(e.owned_bytes for e in images.entries() if e.image not in gone)
            budget = max(request.keep_storage_bytes - left, 0)
        files = self.services.runs.collect_kept(budget, request.dry_run)
        return pb.GcReply(
            removed=[_image(r) for r in removed]
            + [
                pb.ImageRecord(image=f"runfiles/sha256/{d}", kind=KEPT_KIND, size_bytes=n)
                for d, n in files
            ],
            freed_bytes=sum(r.owned_bytes for r in removed) + sum(n for _, n in files),
        )

    def RemoveImage(
        self, request: pb.RemoveImageRequest, context: grpc.ServicerContext
    ) -> pb.RemoveImageReply:
        return pb.RemoveImageReply(removed=self.services.images.remove(request.image))


def _image(r: ImageEntry) -> pb.ImageRecord:
    return pb.ImageRecord(
        image=r.image,
        image_id=r.image_id,
        project=r.project,
        kind=r.kind,
        size_bytes=r.size_bytes,
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        in_use=r.in_use,
    )
