"""Run RPCs: list, show, diff, trace, export and import runs, check and compare a rerun, and
create a whole project from a template."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc

from envd import __version__
from envd.daemon.rpc import RpcBase, project_msg, streamed
from envd.errors import UsageError
from envd.model.provenance import build_statement, statement_json
from envd.model.runrecord import diff_runs
from envd.progress import Progress, Reporter
from envd.services.runpull import PulledResult
from envd.services.runrefs import is_shared_reference
from envd.services.runshare import SharedResult
from envd.v1 import envd_pb2 as pb
from envd.wire import record_msg, run_change_msg


def builder_id() -> str:
    return f"https://github.com/envd/envd/daemon@{socket.gethostname() or 'localhost'}"


class RunsRpc(RpcBase):
    def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListRunsReply:
        project = ""
        if request.project.ref:
            project = self.services.projects.resolve_registered(request.project.ref).name
        records = self.services.runs.records(
            project,
            request.limit or 50,
            where=list(request.where),
            sort=request.sort,
            status=request.status,
        )
        rows = {r.id: r for r in self.services.runs.list(project, 100_000)} if records else {}
        return pb.ListRunsReply(
            runs=[record_msg(r, image=rows[r.id].image if r.id in rows else "") for r in records]
        )

    def GetRun(self, request: pb.GetRunRequest, context: grpc.ServicerContext) -> pb.RunRecord:
        runs = self.services.runs
        row = runs.get(request.id)
        record = runs.record(row.id)
        details = runs.details(row.id)
        msg = record_msg(
            record,
            image=row.image,
            diff=details.diff if details else "",
        )
        msg.finished = row.finished
        return msg

    def DiffRuns(
        self, request: pb.DiffRunsRequest, context: grpc.ServicerContext
    ) -> pb.DiffRunsReply:
        if is_shared_reference(request.a) or is_shared_reference(request.b):
            a, b = (
                self.services.teamruns.shared_record(ref)
                if is_shared_reference(ref)
                else self.services.runs.record(ref)
                for ref in (request.a, request.b)
            )
            changes = diff_runs(a, b)
        else:
            a, b, changes = self.services.runs.diff(request.a, request.b)
        return pb.DiffRunsReply(
            a=record_msg(a),
            b=record_msg(b),
            changes=[run_change_msg(c) for c in changes],
        )

    def Trace(self, request: pb.TraceRequest, context: grpc.ServicerContext) -> pb.TraceReply:
        path = request.path
        relative = os.path.basename(path)
        target = Path(path).resolve()
        for project in self.services.projects.list():
            if target.is_relative_to(Path(project.path)):
                relative = target.relative_to(Path(project.path)).as_posix()
                break
        result = self.services.runs.trace(relative, request.sha256)
        recorded = relative
        if result.producer is not None:
            for name, digest in result.producer.outputs.items():
                if digest == request.sha256 and (name == relative or not recorded):
                    recorded = name
                    break
            else:
                recorded = next(
                    n for n, d in sorted(result.producer.outputs.items()) if d == request.sha256
                )
        return pb.TraceReply(
            path=recorded,
            exact=[record_msg(r) for r in result.exact],
            overwritten=[record_msg(r) for r in result.overwritten],
        )

    def ExportRun(
        self, request: pb.ExportRunRequest, context: grpc.ServicerContext
    ) -> pb.ExportRunReply:
        record = self.services.runs.record(request.id)
        try:
            statement = build_statement(record, builder_id=builder_id(), envd_version=__version__)
        except ValueError as exc:
            raise UsageError(
                str(exc), hint="declare the run's outputs in envd.yaml `runs: outputs`"
            ) from None
        return pb.ExportRunReply(statement=statement_json(statement))

    def ImportRun(
        self, request: pb.ImportRunRequest, context: grpc.ServicerContext
    ) -> pb.ImportRunReply:
        record, added = self.services.runs.import_statement(request.statement, request.origin)
        return pb.ImportRunReply(run=record_msg(record), added=added)

    def CheckRerun(
        self, request: pb.CheckRerunRequest, context: grpc.ServicerContext
    ) -> pb.CheckRerunReply:
        def quiet(progress: Progress) -> None:  # a build's progress: `envctl build` shows it
            return None

        record, row, changes, words, directory = self.services.reruns.check(
            request.id, request.force, quiet, project=request.project.ref
        )
        return pb.CheckRerunReply(
            run=record_msg(record),
            project=row.name,
            changes=changes,
            environment=words,
            directory=directory,
        )

    def CompareRuns(
        self, request: pb.CompareRunsRequest, context: grpc.ServicerContext
    ) -> pb.CompareRunsReply:
        identical, total, differing = self.services.reruns.compare(request.original, request.again)
        return pb.CompareRunsReply(identical=identical, total=total, differing=differing)

    def NewProject(
        self, request: pb.NewProjectRequest, context: grpc.ServicerContext
    ) -> pb.NewProjectReply:
        from envd.services.newproject import create

        directory = Path(request.directory or request.name)
        new = create(self.services.projects, request.name, request.template, directory)
        return pb.NewProjectReply(
            project=project_msg(new.project), package=new.package, files=list(new.files)
        )

    # ------------------------------------------------------------ shared runs (issue 26)

    def ShareRun(
        self, request: pb.ShareRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ShareRunEvent]:
        def work(progress: Reporter) -> SharedResult:
            return self.services.runsharing.share(
                request.run, request.to, request.shared_by, progress
            )

        def result(r: SharedResult) -> pb.ShareRunEvent:
            return pb.ShareRunEvent(
                result=pb.ShareRunResult(
                    reference=r.reference,
                    digest=r.digest,
                    subject=r.subject,
                    files_uploaded=r.uploaded,
                    files_skipped=r.skipped,
                    files_mounted=r.mounted,
                    bytes_uploaded=r.bytes_uploaded,
                    notes=list(r.notes),
                )
            )

        return streamed(work, lambda p: pb.ShareRunEvent(progress=p), result)

    def PullRun(
        self, request: pb.PullRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.PullRunEvent]:
        def work(progress: Reporter) -> PulledResult:
            return self.services.runsharing.pull(
                request.reference, request.project.ref, request.force, progress
            )

        def result(r: PulledResult) -> pb.PullRunEvent:
            return pb.PullRunEvent(
                result=pb.PullRunResult(
                    run=record_msg(r.record),
                    project=r.project,
                    placed=list(r.placed),
                    unchanged=list(r.unchanged),
                    kept=list(r.kept),
                    image=r.image,
                    environment_hash=r.environment_hash,
                    commit=r.commit,
                    added=r.added,
                )
            )

        return streamed(work, lambda p: pb.PullRunEvent(progress=p), result)

    def ListSharedRuns(
        self, request: pb.ListSharedRunsRequest, context: grpc.ServicerContext
    ) -> pb.ListSharedRunsReply:
        listed, read = self.services.teamruns.list_shared(
            request.source, list(request.where), request.sort, request.limit or 50
        )
        return pb.ListSharedRunsReply(
            runs=[
                pb.SharedRunEntry(
                    run=record_msg(item.run.record),
                    shared_by=item.run.shared_by,
                    shared_at=item.run.shared_at,
                    reference=item.reference,
                )
                for item in listed
            ],
            manifests_read=read,
        )
