"""The gRPC servicer: one mixin per concern (envd/rpc/), composed here."""

from __future__ import annotations

from collections.abc import Callable

from envd.daemon.rpc.build import BuildRpc
from envd.daemon.rpc.daemon import DaemonRpc
from envd.daemon.rpc.enter import EnterRpc
from envd.daemon.rpc.export import ExportRpc
from envd.daemon.rpc.fingerprint import FingerprintRpc
from envd.daemon.rpc.host import HostRpc
from envd.daemon.rpc.lock import LockRpc
from envd.daemon.rpc.projects import ProjectsRpc
from envd.daemon.rpc.runs import RunsRpc
from envd.daemon.rpc.share import ShareRpc
from envd.daemon.rpc.status import StatusRpc
from envd.daemon.wiring import Services
from envd.v1 import envd_pb2_grpc


class Servicer(
    DaemonRpc,
    ProjectsRpc,
    LockRpc,
    BuildRpc,
    ExportRpc,
    EnterRpc,
    RunsRpc,
    FingerprintRpc,
    HostRpc,
    ShareRpc,
    StatusRpc,
    envd_pb2_grpc.EnvdServicer,
):
    def __init__(self, services: Services, shutdown: Callable[[], None]) -> None:
        self.services = services
        self._shutdown = shutdown
