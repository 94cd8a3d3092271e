"""The gRPC servicer: one mixin per concern (envd/rpc/), composed here."""

from __future__ import annotations

from collections.abc import Callable

from envd.app import App
from envd.rpc.build import BuildRpc
from envd.rpc.daemon import DaemonRpc
from envd.rpc.enter import EnterRpc
from envd.rpc.fingerprint import FingerprintRpc
from envd.rpc.host import HostRpc
from envd.rpc.lock import LockRpc
from envd.rpc.projects import ProjectsRpc
from envd.rpc.share import ShareRpc
from envd.rpc.status import StatusRpc
from envd.v1 import envd_pb2_grpc


class Servicer(
    DaemonRpc,
    ProjectsRpc,
    LockRpc,
    BuildRpc,
    EnterRpc,
    FingerprintRpc,
    HostRpc,
    ShareRpc,
    StatusRpc,
    envd_pb2_grpc.EnvdServicer,
):
    def __init__(self, app: App, shutdown: Callable[[], None]) -> None:
        self.app = app
        self._shutdown = shutdown
