"""Enter RPCs: prepare an exec, finish a run, list and stop warm containers (runs: rpc/runs)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from envd.daemon.enter_socket import warm_row
from envd.daemon.rpc import RpcBase, streamed
from envd.progress import Reporter
from envd.services.entering import EnterCall, ExecPlan
from envd.services.warmrecord import Warm
from envd.v1 import envd_pb2 as pb


def warm_msg(w: Warm) -> pb.WarmContainer:
    """The row the enter socket's "list" sends, as a message: both paths show the same."""
    return pb.WarmContainer(**warm_row(w))


class EnterRpc(RpcBase):
    def Enter(
        self, request: pb.EnterRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.EnterEvent]:
        call = EnterCall(
            project=request.project.ref,
            command=tuple(request.command),
            gpus=request.gpus,
            tty=request.tty,
            cwd=request.cwd,
            uid=request.uid,
            gid=request.gid,
            user_name=request.user_name,
        )

        def work(progress: Reporter) -> ExecPlan:
            return self.services.entering.prepare(call, progress)

        def result(plan: ExecPlan) -> pb.EnterEvent:
            return pb.EnterEvent(
                target=pb.ExecTarget(
                    container_id=plan.container_id,
                    container_name=plan.container_name,
                    user=plan.user,
                    workdir=plan.workdir,
                    env=plan.env,
                    argv=list(plan.argv),
                    run_id=plan.run_id,
                    started=plan.started,
                    sync_id=plan.sync_id,
                )
            )

        return streamed(work, lambda p: pb.EnterEvent(progress=p), result)

    def FinishRun(
        self, request: pb.FinishRunRequest, context: grpc.ServicerContext
    ) -> pb.FinishRunReply:
        # Files first: the run's record hashes the outputs the command wrote, here.
        notes = self.services.entering.sync_back(request.sync_id) if request.sync_id else []
        if request.run_id:
            self.services.entering.finish(request.run_id, request.exit_code)
        return pb.FinishRunReply(notes=notes)

    def ListContainers(
        self, request: pb.ListContainersRequest, context: grpc.ServicerContext
    ) -> pb.ListContainersReply:
        return pb.ListContainersReply(
            containers=[warm_msg(w) for w in self.services.warm.refresh()]
        )

    def Stop(self, request: pb.StopRequest, context: grpc.ServicerContext) -> pb.StopReply:
        project = None
        if not request.all:
            project = self.services.projects.resolve_registered(request.project.ref).name
        return pb.StopReply(stopped=[warm_msg(w) for w in self.services.warm.stop(project)])
