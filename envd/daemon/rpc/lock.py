"""Lock RPC: resolve a project into envd.lock, or check that it is current."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from envd.daemon.rpc import RpcBase, streamed
from envd.progress import Reporter
from envd.services.locker import LockOutcome
from envd.v1 import envd_pb2 as pb


def lock_result(outcome: LockOutcome) -> pb.LockResult:
    lock = outcome.lock
    return pb.LockResult(
        lock_path=str(outcome.path),
        inputs_hash=lock.inputs_hash if lock else "",
        changed=outcome.changed,
        in_sync=outcome.in_sync,
        reasons=list(outcome.reasons),
        python_packages=len(lock.python) if lock else 0,
        debian_packages=len(lock.base.packages or lock.system) if lock else 0,
        accelerator=lock.target.accelerator if lock else "",
        min_driver=lock.target.min_driver if lock else "",
    )


class LockRpc(RpcBase):
    def Lock(
        self, request: pb.LockRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.LockEvent]:
        row = self.services.projects.resolve(request.project.ref)

        def work(progress: Reporter) -> LockOutcome:
            if request.check:
                return self.services.locker.check(row)
            return self.services.locker.lock(
                row,
                progress,
                upgrade=request.upgrade,
                upgrade_packages=tuple(request.upgrade_packages),
            )

        return streamed(
            work,
            lambda p: pb.LockEvent(progress=p),
            lambda outcome: pb.LockEvent(result=lock_result(outcome)),
        )
