"""The daemon's real object graph and servicer on a temporary socket, with a fake engine.

No Docker: what crosses the socket (typed client, servicer, interceptor, CLI error mapping) is
tested end to end, the way `envctl` meets the daemon.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from cli.client import Client
from envd.daemon.interceptor import ErrorInterceptor
from envd.daemon.servicer import Servicer
from envd.daemon.wiring import Services, build_services
from envd.errors import EXIT_NOT_FOUND, EXIT_USER, LockStale, NotFound, SpecError
from envd.gateways.engine import EngineInfo
from envd.paths import resolve_paths
from envd.v1 import envd_pb2 as pb
from envd.v1 import envd_pb2_grpc
from tests.fakes.engine import FakeEngine


class Engine(FakeEngine):
    def info(self) -> EngineInfo:
        return EngineInfo(reachable=True, version="20.10-fake")

    def inspect_image(self, ref: str) -> Any:
        return None


@dataclasses.dataclass
class Daemon:
    services: Services
    client: Client


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with tempfile.TemporaryDirectory(prefix="envd-inproc-", dir="/tmp") as folder:
        paths = dataclasses.replace(resolve_paths(), socket=Path(folder) / "envd.sock")
        services = build_services(paths, engine=Engine())  # type: ignore[arg-type]
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4),
            interceptors=[ErrorInterceptor(str(paths.log_file))],
            options=[("grpc.so_reuseport", 0)],
        )
        envd_pb2_grpc.add_EnvdServicer_to_server(  # type: ignore[no-untyped-call]
            Servicer(services, lambda: None), server
        )
        server.add_insecure_port(f"unix:{paths.socket}")
        server.start()
        client = Client(paths)
        try:
            yield Daemon(services, client)
        finally:
            client.close()
            server.stop(grace=None)
            services.close()


def project(tmp_path: Path, name: str, spec: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "envd.yaml").write_text(spec)
    return directory


GOOD = "version: 1\nbase: {debian: bookworm}\npackages: [six]\n"


def test_a_project_registers_and_lists_through_the_socket(daemon: Daemon, tmp_path: Path) -> None:
    directory = project(tmp_path, "churn", GOOD)
    added = daemon.client.add_project(pb.AddProjectRequest(path=str(directory)))
    assert added.name == "churn" and added.path == str(directory)
    listed = daemon.client.list_projects(pb.ListProjectsRequest())
    assert [p.name for p in listed.projects] == ["churn"]
    assert listed.projects[0].state == pb.PROJECT_STATE_NEW


def test_an_invalid_spec_arrives_as_a_spec_error_with_its_line(
    daemon: Daemon, tmp_path: Path
) -> None:
    directory = project(tmp_path, "bad", GOOD + "pakages: [numpy]\n")
    with pytest.raises(SpecError) as failed:
        daemon.client.add_project(pb.AddProjectRequest(path=str(directory)))
    assert failed.value.exit_code == EXIT_USER
    assert "line 4" in str(failed.value) or ":4" in str(failed.value)
    assert "did you mean `packages`" in str(failed.value)


def test_an_unknown_project_is_not_found_with_a_hint(daemon: Daemon) -> None:
    with pytest.raises(NotFound) as failed:
        daemon.client.project_status(pb.ProjectRef(ref="nope"))
    assert failed.value.exit_code == EXIT_NOT_FOUND
    assert failed.value.hint and "envctl ls" in failed.value.hint


def test_a_missing_lock_is_stale_for_lock_check(daemon: Daemon, tmp_path: Path) -> None:
    directory = project(tmp_path, "nolock", GOOD)
    events = daemon.client.lock(
        pb.LockRequest(project=pb.ProjectRef(ref=str(directory)), check=True)
    )
    with pytest.raises(LockStale, match="does not exist"):
        list(events)


def test_settings_round_trip_and_bad_values_are_refused(daemon: Daemon) -> None:
    reply = daemon.client.set_config(pb.SetConfigRequest(key="idle_timeout", value="60"))
    assert {e.key: e.value for e in reply.entries}["idle_timeout"] == "60"
    assert daemon.services.settings.current.idle_timeout == 60
    with pytest.raises(Exception, match="takes a number of seconds") as failed:
        daemon.client.set_config(pb.SetConfigRequest(key="idle_timeout", value="soon"))
    assert failed.value.exit_code == 2  # type: ignore[attr-defined]
    assert daemon.services.settings.current.idle_timeout == 60


def test_status_comes_from_the_wired_services(daemon: Daemon) -> None:
    status = daemon.client.status(pb.StatusRequest())
    assert status.engine.version == "20.10-fake" and status.projects == 0
