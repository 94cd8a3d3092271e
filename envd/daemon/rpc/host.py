"""HostInfo RPC: what `envctl info` shows."""

from __future__ import annotations

import grpc

from envd.daemon.rpc import RpcBase, engine_msg
from envd.v1 import envd_pb2 as pb


class HostRpc(RpcBase):
    def HostInfo(
        self, request: pb.HostInfoRequest, context: grpc.ServicerContext
    ) -> pb.HostInfoReply:
        host = self.services.host.refresh()
        return pb.HostInfoReply(
            cpu_model=host.cpu_model,
            arch=host.arch,
            cpu_count=host.cpu_count,
            memory_bytes=host.memory_bytes,
            kernel=host.kernel,
            os=host.os,
            engine=engine_msg(self.services.engine.info()),
            gpus=[
                pb.Gpu(
                    index=g.index,
                    name=g.name,
                    uuid=g.uuid,
                    memory_bytes=g.memory_bytes,
                    compute_capability=g.compute_capability,
                )
                for g in host.gpus
            ],
            driver_version=host.driver_version,
            cuda_driver_version=host.cuda_driver_version,
            gpu_error=host.gpu_error,
            gpu_source=host.gpu_source,
        )
