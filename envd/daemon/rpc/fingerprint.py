"""Fingerprint RPCs: fingerprint, diff, verify."""

from __future__ import annotations

import grpc

from envd.daemon.rpc import RpcBase
from envd.errors import UsageError
from envd.model.fingerprint import Fingerprint
from envd.v1 import envd_pb2 as pb
from envd.wire import change_msg, to_msg


class FingerprintRpc(RpcBase):
    def _subject(self, subject: pb.Subject) -> tuple[Fingerprint, str, str]:
        """(fingerprint, label, image on this engine or "" for a fingerprint file)."""
        which = subject.WhichOneof("subject")
        fps = self.services.fingerprints
        if which == "project":
            row = self.services.projects.resolve(subject.project.ref)
            return fps.for_project(row), f"project {row.name}", fps.image_of(row)
        if which == "file":
            return fps.for_file(subject.file), subject.file, ""
        if which == "run_id":
            run = self.services.runs.get(subject.run_id)
            return fps.for_run(subject.run_id), f"run {subject.run_id}", run.image
        if which == "image":
            return fps.for_image(subject.image), f"image {subject.image}", subject.image
        raise UsageError("name a project, a fingerprint file, a run ID or an image")

    def GetFingerprint(
        self, request: pb.FingerprintRequest, context: grpc.ServicerContext
    ) -> pb.Fingerprint:
        return to_msg(self._subject(request.subject)[0])

    def Diff(self, request: pb.DiffRequest, context: grpc.ServicerContext) -> pb.DiffReply:
        a, a_label, a_image = self._subject(request.a)
        b, b_label, b_image = self._subject(request.b)
        diff = self.services.fingerprints.diff(a, b, a_image, b_image)
        return pb.DiffReply(
            identical=diff.identical,
            environment_identical=diff.environment_identical,
            host_identical=diff.host_identical,
            changes=[change_msg(c) for c in diff.changes],
            a_label=a_label,
            b_label=b_label,
            a_root_hash=a.root_hash,
            b_root_hash=b.root_hash,
        )

    def Verify(self, request: pb.ProjectRef, context: grpc.ServicerContext) -> pb.VerifyReply:
        row = self.services.projects.resolve(request.ref)
        diff, checked = self.services.fingerprints.verify(row)
        return pb.VerifyReply(
            ok=diff.environment_identical,
            changes=[change_msg(c) for c in diff.changes if c.section == "environment"],
            checked=checked,
        )
