"""ProjectStatus RPC: one project's state, why it is stale, its lock and warm containers."""

from __future__ import annotations

import grpc

from envd.daemon.rpc import RpcBase, project_msg
from envd.daemon.rpc.enter import warm_msg
from envd.errors import EnvdError
from envd.gateways.projectfiles import read_lock
from envd.model.lockfile import inputs_from_spec, staleness
from envd.services.locker import lock_path
from envd.v1 import envd_pb2 as pb


class StatusRpc(RpcBase):
    def ProjectStatus(
        self, request: pb.ProjectRef, context: grpc.ServicerContext
    ) -> pb.ProjectStatusReply:
        row = self.app.projects.resolve_registered(request.ref)
        path = lock_path(row)
        reasons: list[str] = []
        try:
            lock = read_lock(path)
            if lock is not None:
                reasons = staleness(lock, inputs_from_spec(self.app.projects.spec(row)))
        except EnvdError as exc:
            reasons = [exc.message]
        row = self.app.store.project_by_name(row.name) or row
        return pb.ProjectStatusReply(
            project=project_msg(row),
            stale_reasons=reasons,
            lock_path=str(path),
            lock_exists=path.exists(),
            containers=[warm_msg(w) for w in self.app.warm.all() if w.project == row.name],
        )
