"""The typed client against a real in-process gRPC server with the daemon's ErrorInterceptor.

No daemon, no engine: a small servicer raises envd errors (with non-ASCII text, as paths
often are) and the real `cli.client.Client` must give the CLI back the same class, exit
code, message and hint. Nothing of grpc is mocked.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import grpc
import pytest

from cli.client import Client, InternalDaemonError
from cli.errors import run_cli
from cli.output import follow
from envd import errors
from envd.daemon.interceptor import ErrorInterceptor, ascii_safe
from envd.errors import EXIT_BUG, EnvdError
from envd.paths import resolve_paths
from envd.v1 import envd_pb2 as pb
from envd.v1 import envd_pb2_grpc

HINT = "see /tmp/données/é — 日本語 ✓"
MESSAGE = "cannot read /home/zoë/projets/naïve/envd.yaml"


class FakeEnvd(envd_pb2_grpc.EnvdServicer):
    """Raises `error` from every call it implements; streams `events` first."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.events: list[pb.BuildEvent] = []
        self.delay_s = 0.0

    def ListProjects(self, request: pb.ListProjectsRequest, context: Any) -> pb.ListProjectsReply:
        time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return pb.ListProjectsReply(projects=[pb.Project(name="naïve", path="/tmp/données")])

    def Build(self, request: pb.BuildRequest, context: Any) -> Iterator[pb.BuildEvent]:
        yield from self.events
        if self.error is not None:
            raise self.error


@pytest.fixture
def daemon() -> Iterator[tuple[FakeEnvd, Client]]:
    # A short folder: a Unix socket path has a limit of about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="envd-client-", dir="/tmp") as folder:
        paths = dataclasses.replace(resolve_paths(), socket=Path(folder) / "envd.sock")
        servicer = FakeEnvd()
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4),
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


def _user_errors() -> list[EnvdError]:
    made: list[EnvdError] = []
    for cls in errors.ALL_ERRORS:
        if cls is errors.SpecError:
            made.append(cls(MESSAGE, file="/tmp/données/envd.yaml", line=3, hint=HINT))
        else:
            made.append(cls(MESSAGE, hint=HINT))
    return made


def _check_same(got: EnvdError, sent: EnvdError) -> None:
    assert type(got) is type(sent)
    assert got.exit_code == sent.exit_code
    assert got.message == sent.message
    assert got.hint == sent.hint


@pytest.mark.parametrize("sent", _user_errors(), ids=lambda e: type(e).__name__)
def test_unary_error_keeps_class_exit_code_message_and_unicode_hint(
    daemon: tuple[FakeEnvd, Client], sent: EnvdError
) -> None:
    servicer, client = daemon
    servicer.error = sent
    with pytest.raises(EnvdError) as caught:
        client.list_projects(pb.ListProjectsRequest())
    _check_same(caught.value, sent)


def test_streamed_error_after_progress_keeps_its_meaning(daemon: tuple[FakeEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.events = [
        pb.BuildEvent(progress=pb.Progress(step="système", message="étape 1")),
        pb.BuildEvent(progress=pb.Progress(step="venv", message="étape 2")),
    ]
    sent = errors.BuildFailed("step `setup` failed in /tmp/données", hint=HINT)
    servicer.error = sent
    received: list[pb.BuildEvent] = []
    with pytest.raises(EnvdError) as caught:
        for event in client.build(pb.BuildRequest(project=pb.ProjectRef(ref="naïve"))):
            received.append(event)
    assert [e.progress.message for e in received] == ["étape 1", "étape 2"]
    _check_same(caught.value, sent)
    assert caught.value.exit_code == errors.EXIT_BUILD


def test_streamed_result_reaches_follow(daemon: tuple[FakeEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.events = [
        pb.BuildEvent(progress=pb.Progress(step="base", message="débogage")),
        pb.BuildEvent(result=pb.BuildResult(image="envd/naïve:1", cached=True)),
    ]
    result = follow(client.build(pb.BuildRequest()))
    assert isinstance(result, pb.BuildResult)
    assert result.image == "envd/naïve:1"
    assert result.cached


def test_unary_reply_is_the_typed_message(daemon: tuple[FakeEnvd, Client]) -> None:
    _, client = daemon
    reply = client.list_projects(pb.ListProjectsRequest())
    assert isinstance(reply, pb.ListProjectsReply)
    assert [(p.name, p.path) for p in reply.projects] == [("naïve", "/tmp/données")]


def test_multiline_hint_and_exit_code_of_the_instance_round_trip(
    daemon: tuple[FakeEnvd, Client],
) -> None:
    servicer, client = daemon
    sent = errors.LockError("no version of «torch» fits", hint="line one: é\nline two: ü")
    sent.exit_code = errors.EXIT_HOST  # the instance's code travels, not only the class's
    servicer.error = sent
    with pytest.raises(errors.LockError) as caught:
        client.list_projects(pb.ListProjectsRequest())
    _check_same(caught.value, sent)


def test_error_without_hint_has_none(daemon: tuple[FakeEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.error = errors.NotFound("no project `café`")
    with pytest.raises(errors.NotFound) as caught:
        client.list_projects(pb.ListProjectsRequest())
    assert caught.value.hint is None
    assert caught.value.message == "no project `café`"


@pytest.mark.parametrize("streamed", [False, True], ids=["unary", "stream"])
def test_bug_in_the_daemon_exits_3_and_names_its_log(
    daemon: tuple[FakeEnvd, Client], streamed: bool
) -> None:
    servicer, client = daemon
    servicer.error = ZeroDivisionError("división por cero en /tmp/données")
    with pytest.raises(InternalDaemonError) as caught:
        if streamed:
            list(client.build(pb.BuildRequest()))
        else:
            client.list_projects(pb.ListProjectsRequest())
    err = caught.value
    assert err.exit_code == EXIT_BUG == 3
    assert "ZeroDivisionError: división por cero en /tmp/données" in err.message
    assert err.hint == f"the daemon's log is {client.paths.log_file}"


def test_the_cli_prints_unicode_message_and_hint_and_exits_with_the_code(
    daemon: tuple[FakeEnvd, Client], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, client = daemon
    servicer.error = errors.HostRequirementError(MESSAGE, hint=HINT)

    @click.command()
    def ls() -> None:
        client.list_projects(pb.ListProjectsRequest())

    assert run_cli(ls, []) == errors.EXIT_HOST
    err = capsys.readouterr().err
    assert f"envctl: error: {MESSAGE}\n" in err
    assert f"  hint: {HINT}\n" in err
    assert "Invalid metadata" not in err


def test_status_details_are_ascii_for_clients_that_read_only_the_status(
    daemon: tuple[FakeEnvd, Client],
) -> None:
    servicer, client = daemon
    servicer.error = errors.NotFound("no project `café`\nat /tmp/é")
    stub = envd_pb2_grpc.EnvdStub(client.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListProjects(pb.ListProjectsRequest())
    rpc = caught.value
    assert rpc.code() == grpc.StatusCode.NOT_FOUND
    details = rpc.details()
    assert details.isascii() and details.isprintable()
    assert details == r"no project `caf\xe9` at /tmp/\xe9"
    assert details == ascii_safe("no project `café`\nat /tmp/é")


def test_undecodable_path_bytes_arrive_as_replacement_characters(
    daemon: tuple[FakeEnvd, Client],
) -> None:
    servicer, client = daemon
    path = os.fsdecode(b"/tmp/caf\xe9")  # Latin-1 bytes in a file name: a surrogate escape
    servicer.error = errors.NotFound(f"no envd.yaml in {path}", hint=f"look in {path}")
    with pytest.raises(errors.NotFound) as caught:
        client.list_projects(pb.ListProjectsRequest())
    assert caught.value.message == "no envd.yaml in /tmp/caf\ufffd"
    assert caught.value.hint == "look in /tmp/caf\ufffd"


def test_a_lone_surrogate_does_not_break_the_error(daemon: tuple[FakeEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.error = errors.UsageError("odd \ud800 text")
    with pytest.raises(errors.UsageError) as caught:
        client.list_projects(pb.ListProjectsRequest())
    assert caught.value.message == "odd \\ud800 text"


class AsciiOnlyEnvd(envd_pb2_grpc.EnvdServicer):
    """A daemon from before binary metadata: ASCII kind, exit and hint, set by the handler."""

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        context.set_trailing_metadata(
            (("envd-kind", "not_found"), ("envd-exit", "4"), ("envd-hint", "run `envctl ls`"))
        )
        context.abort(grpc.StatusCode.NOT_FOUND, "no project `old`")
        raise AssertionError("abort returns only by raising")


def test_errors_of_a_daemon_with_ascii_metadata_still_map() -> None:
    with tempfile.TemporaryDirectory(prefix="envd-client-", dir="/tmp") as folder:
        paths = dataclasses.replace(resolve_paths(), socket=Path(folder) / "envd.sock")
        server = grpc.server(ThreadPoolExecutor(max_workers=2))  # no ErrorInterceptor
        envd_pb2_grpc.add_EnvdServicer_to_server(AsciiOnlyEnvd(), server)
        server.add_insecure_port(f"unix:{paths.socket}")
        server.start()
        client = Client(paths)
        try:
            with pytest.raises(errors.NotFound) as caught:
                client.status(pb.StatusRequest())
        finally:
            client.close()
            server.stop(grace=None)
    assert caught.value.exit_code == errors.EXIT_NOT_FOUND
    assert caught.value.message == "no project `old`"
    assert caught.value.hint == "run `envctl ls`"


def test_timeout_is_passed_to_the_call(daemon: tuple[FakeEnvd, Client]) -> None:
    servicer, client = daemon
    servicer.delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(EnvdError, match="DEADLINE_EXCEEDED"):
        client.list_projects(pb.ListProjectsRequest(), timeout=0.1)
    assert time.monotonic() - started < 0.9


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_one_typed_method_per_rpc_of_the_proto() -> None:
    service = pb.DESCRIPTOR.services_by_name["Envd"]
    assert len(service.methods) > 20
    for method in service.methods:
        fn = getattr(Client, _snake(method.name), None)
        assert fn is not None, f"Client has no method for {method.name}"
        hints = typing.get_type_hints(fn)
        request = getattr(pb, method.input_type.name)
        reply = getattr(pb, method.output_type.name)
        assert hints["request"] is request, method.name
        expected = Iterator[reply] if method.server_streaming else reply
        assert hints["return"] == expected, method.name
        assert hints["timeout"] == float | None, method.name
    assert not hasattr(Client, "call")
    assert not hasattr(Client, "stream")
