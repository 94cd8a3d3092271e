"""Daemon RPCs: status, shutdown, events, config."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import grpc

from envd.daemon.rpc import RpcBase, engine_msg, event_msg
from envd.v1 import envd_pb2 as pb


class DaemonRpc(RpcBase):
    _shutdown: Callable[[], None]

    # ------------------------------------------------------------ daemon

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        s = self.services.status()
        return pb.StatusReply(
            version=s.version,
            uptime_s=s.uptime_s,
            socket_path=s.socket_path,
            pid=s.pid,
            home=s.home,
            log_path=s.log_path,
            engine=engine_msg(s.engine),
            projects=s.projects,
        )

    def Shutdown(
        self, request: pb.ShutdownRequest, context: grpc.ServicerContext
    ) -> pb.ShutdownReply:
        threading.Thread(target=self._shutdown, daemon=True).start()
        return pb.ShutdownReply()

    # ------------------------------------------------------------ events and config

    def Events(
        self, request: pb.EventsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DaemonEvent]:
        for event in self.services.events.subscribe(is_active=context.is_active):
            if not request.project or event.project == request.project:
                yield event_msg(event)

    def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigReply:
        return self._config_reply()

    def SetConfig(
        self, request: pb.SetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigReply:
        self.services.set_config(request.key, request.value)
        return self._config_reply()

    def _config_reply(self) -> pb.GetConfigReply:
        return pb.GetConfigReply(
            entries=[
                pb.ConfigEntry(key=k, value=v, description=d)
                for k, v, d in self.services.settings.current.entries()
            ]
        )
