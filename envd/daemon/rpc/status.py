"""ProjectStatus RPC: one project's state, why it is stale, its lock and warm containers."""

from __future__ import annotations

import grpc

from envd.daemon.rpc import RpcBase, project_msg
from envd.daemon.rpc.enter import warm_msg
from envd.errors import EnvdError
from envd.model.cuda import host_gap
from envd.services.projects import lock_path
from envd.v1 import envd_pb2 as pb


class StatusRpc(RpcBase):
    def ProjectStatus(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.ProjectStatusReply:
        row = self.services.projects.resolve_registered(request.ref)
        path = lock_path(row)
        reasons: list[str] = []
        gap = ""
        try:  # one read of envd.yaml and envd.lock for the whole answer
            spec = self.services.projects.spec(row)
            gap = host_gap(spec.gpu, self.services.host.host)
            snapshot = self.services.projects.snapshot(row, spec)
            if snapshot.lock is not None:
                reasons = list(snapshot.reasons)
        except EnvdError as exc:
            reasons = [exc.message]  # (an invalid envd.yaml: `lock` and `build` say why)
        return pb.ProjectStatusReply(
            host_notes=[gap] if gap else [],
            project=project_msg(row),
            stale_reasons=reasons,
            lock_path=str(path),
            lock_exists=path.exists(),
            containers=[warm_msg(w) for w in self.services.warm.all() if w.project == row.name],
        )
