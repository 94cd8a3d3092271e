"""A full disk under a daemon call is the README's exit 11 (StateError) naming the folder,
not an internal error: a real in-process gRPC server with the daemon's ErrorInterceptor, a
servicer that fails as a build copying into a full $ENVD_HOME does, the real client."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from cli.client import Client
from envd.daemon.interceptor import ErrorInterceptor
from envd.errors import EXIT_DAEMON, EnvdError, StateError
from envd.paths import resolve_paths
from envd.v1 import envd_pb2 as pb
from envd.v1 import envd_pb2_grpc

SOURCE = "/home/u/.local/share/envd/venv/bin/uv"
TARGET = "/home/u/.local/share/envd/tmp/build-x1/mnt/uv"


class FailingEnvd(envd_pb2_grpc.EnvdServicer):
    def __init__(self) -> None:
        self.error: BaseException = OSError()

    def ListProjects(self, request: pb.ListProjectsRequest, context: Any) -> pb.ListProjectsReply:
        raise self.error

    def Build(self, request: pb.BuildRequest, context: Any) -> Iterator[pb.BuildEvent]:
        yield pb.BuildEvent(progress=pb.Progress(step="base", message="copying"))
        raise self.error


@pytest.fixture
def daemon() -> Iterator[tuple[FailingEnvd, Client]]:
    with tempfile.TemporaryDirectory(prefix="envd-full-", dir="/tmp") as folder:
        paths = dataclasses.replace(resolve_paths(), socket=Path(folder) / "envd.sock")
        servicer = FailingEnvd()
        server = grpc.server(
            ThreadPoolExecutor(max_workers=2),
            interceptors=[ErrorInterceptor(str(paths.log_file))],
            options=[("grpc.so_reuseport", 0)],
        )
        envd_pb2_grpc.add_EnvdServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix:{paths.socket}")
        server.start()
        client = Client(paths)
        try:
            yield servicer, client
        finally:
            client.close()
            server.stop(grace=None)


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), SOURCE, None, TARGET)


def test_a_full_disk_during_a_build_is_exit_11_naming_the_folder(
    daemon: tuple[FailingEnvd, Client],
) -> None:
    servicer, client = daemon
    servicer.error = _enospc()
    with pytest.raises(StateError) as caught:
        for _ in client.build(pb.BuildRequest(project=pb.ProjectRef(ref="p"))):
            pass
    assert caught.value.exit_code == EXIT_DAEMON == 11
    assert caught.value.message.startswith(
        "no space left on device under /home/u/.local/share/envd/tmp/build-x1/mnt"
    )
    assert caught.value.hint is not None and "df -h" in caught.value.hint


def test_a_full_disk_wrapped_by_another_error_is_still_exit_11(
    daemon: tuple[FailingEnvd, Client],
) -> None:
    servicer, client = daemon
    try:
        try:
            raise _enospc()
        except OSError as exc:
            raise shutil.Error([(SOURCE, TARGET, str(exc))]) from exc
    except shutil.Error as wrapped:
        servicer.error = wrapped
    with pytest.raises(StateError, match="no space left on device under"):
        client.list_projects(pb.ListProjectsRequest())


def test_a_full_quota_is_exit_11(daemon: tuple[FailingEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.error = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/srv/home/envd.db")
    with pytest.raises(StateError, match=r"disk quota full under /srv/home \(writing"):
        client.list_projects(pb.ListProjectsRequest())


def test_another_os_error_is_still_an_internal_error(daemon: tuple[FailingEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.error = OSError(errno.EIO, os.strerror(errno.EIO), TARGET)
    with pytest.raises(EnvdError) as caught:
        client.list_projects(pb.ListProjectsRequest())
    assert caught.value.exit_code == 3
