"""`envctl ps` over the enter socket (envd/model/listing.py): the daemon answers from its
registry, the CLI prints what the gRPC path prints, without importing grpc."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.entering import Refused, ask
from cli.everyday import print_ps, rows_of, show_ps
from cli.output import message_dict
from envd.agent.agent import Frame, encode, take_frames
from envd.daemon.engine_guard import EngineGuard
from envd.daemon.enter_socket import Session
from envd.daemon.rpc.enter import warm_msg
from envd.errors import EXIT_DAEMON, EnvdError
from envd.model.listing import CONTAINERS, list_request, warm_rows
from envd.v1 import envd_pb2 as pb
from tests.conftest import ROOT
from tests.unit.services.test_entering import World, close, make_world

OURS = ["", ""]  # the engine the test daemon was started for (no DOCKER_HOST, no context)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    close(w)


def one_reply(session: Callable[[socket.socket], Session], request: dict[str, object]) -> Frame:
    """The daemon's one reply to `request` on a fresh connection served by `session(conn)`."""
    cli, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with cli, daemon:
        cli.sendall(encode(request))
        session(daemon).run([])
        daemon.shutdown(socket.SHUT_WR)
        buf = bytearray()
        while data := cli.recv(1 << 16):
            buf += data
    frames = take_frames(buf)
    assert len(frames) == 1, frames
    return frames[0]


# What the CLI's fast paths take as "go on over gRPC", whatever they asked.
REFUSALS = [
    {"op": "error", "message": "bad enter request: the first frame must be enter",
     "exit_code": 2},  # an older daemon
    {"op": "error", "message": "another engine", "hint": "unset it", "exit_code": 11},
]  # fmt: skip


def listed(world: World, request: dict[str, object], guard: EngineGuard | None = None) -> Frame:
    def session(conn: socket.socket) -> Session:
        return Session(world.entering, conn, os.getuid(), os.getgid(), guard, world.warm.refresh)

    return one_reply(session, request)


def grpc_reply(world: World) -> pb.ListContainersReply:
    return pb.ListContainersReply(containers=[warm_msg(w) for w in world.warm.refresh()])


def test_the_list_reply_has_the_rows_grpc_sends(world: World) -> None:
    world.enter("true")
    reply = listed(world, list_request(CONTAINERS, OURS))
    rows = warm_rows(reply)
    assert [r["project"] for r in rows] == ["proj"]
    assert rows == message_dict(grpc_reply(world))["containers"]


def test_a_retiring_container_is_listed_as_retiring(world: World) -> None:
    world.enter("true")
    world.warm.all()[0].retiring = True
    (row,) = warm_rows(listed(world, list_request(CONTAINERS, OURS)))
    assert row["status"] == "retiring"


def test_no_warm_containers_is_an_empty_list(world: World) -> None:
    assert warm_rows(listed(world, list_request(CONTAINERS, OURS))) == []


def test_a_list_from_another_engines_environment_is_refused(world: World) -> None:
    guard = EngineGuard(("", ""))
    reply = listed(world, list_request(CONTAINERS, ["tcp://gpu:2376", ""]), guard)
    assert reply["op"] == "error" and reply["exit_code"] == EXIT_DAEMON, reply
    assert "DOCKER_HOST=tcp://gpu:2376" in str(reply["message"])


def test_listing_anything_else_is_a_bad_request(world: World) -> None:
    reply = listed(world, list_request("images", OURS))
    assert reply["op"] == "error" and reply["exit_code"] == 2, reply


@pytest.mark.parametrize(
    "reply",
    [
        {"op": "exit", "status": 0},
        {"op": "containers", "containers": {}},
        {"op": "containers", "containers": [{"project": "p"}]},
        {"op": "containers", "containers": [{**dict.fromkeys(("project", "container_id",
            "image", "status"), "x"), "started_at": "now", "last_used_at": 1.0}]},
    ],
)  # fmt: skip
def test_a_reply_that_is_not_a_list_of_rows_is_rejected(reply: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        warm_rows(reply)


# ---------------------------------------------------------------- the CLI's side

SAMPLE = [
    pb.WarmContainer(
        project="a", container_id="c" * 64, image="envd/a:1", started_at=1.7e9,
        last_used_at=1733500000.25, status="running",
    ),
    pb.WarmContainer(project="b", container_id="d" * 64, image="envd/b:é", status="retiring"),
]  # fmt: skip


class FakeClient:
    def list_containers(self, request: pb.ListContainersRequest) -> pb.ListContainersReply:
        return pb.ListContainersReply(containers=SAMPLE)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_rows_print_as_the_grpc_reply_prints(
    as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    print_ps(FakeClient(), as_json)  # type: ignore[arg-type]
    by_grpc = capsys.readouterr().out
    rows = rows_of(FakeClient().list_containers(pb.ListContainersRequest()))
    show_ps(warm_rows(json.loads(json.dumps({"op": CONTAINERS, CONTAINERS: rows}))), as_json)
    assert capsys.readouterr().out == by_grpc
    assert "envd/b:é" in by_grpc or "envd/b:\\u00e9" in by_grpc


def serve_once(path: str, answer: Callable[[socket.socket], None]) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def one() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                answer(conn)

    thread = threading.Thread(target=one, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def short_dir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="envd-ps-", dir="/tmp")  # sun_path: 108 bytes
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def fast_path_answers(
    short_dir: str,
    reply: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    fast: Callable[[list[str]], bool],
    args: list[str],
) -> bool:
    """What the CLI's fast path `fast(args)` decides when the daemon's enter socket (under
    short_dir, as ENVD_HOME) answers `reply` to its one request."""
    where = Path(short_dir) / "run" / "enter.sock"
    where.parent.mkdir()
    served = serve_once(str(where), lambda conn: refuse(conn, reply))
    monkeypatch.setenv("ENVD_HOME", short_dir)
    decided = fast(args)
    served.join(timeout=10)
    return decided


def envctl_against(
    short_dir: str, daemon: Callable[[socket.socket], None], argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """`envctl ARGV` in a process of its own, against `daemon` on the enter socket under
    short_dir; its last line says how it exited and whether it imported grpc or click."""
    run = Path(short_dir) / "run"
    run.mkdir()
    served = serve_once(str(run / "enter.sock"), daemon)
    code = (
        "import sys\n"
        "from cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exc:\n"
        "    print('EXIT', exc.code, 'GRPC', 'grpc' in sys.modules,\n"
        "          'CLICK', 'click' in sys.modules)\n"
    )  # fmt: skip
    env = {**os.environ, "ENVD_HOME": short_dir}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    served.join(timeout=10)
    return out


def refuse(conn: socket.socket, refusal: dict[str, object]) -> None:
    """As the daemon does: the request read (its one frame), then the refusal."""
    buf = bytearray()
    while not take_frames(buf):
        buf += conn.recv(1 << 16)
    conn.sendall(encode(refusal))


def test_no_socket_means_ask_over_grpc(short_dir: str) -> None:
    with pytest.raises(Refused):
        ask(os.path.join(short_dir, "absent.sock"), list_request(CONTAINERS, OURS))


def test_an_older_daemons_bad_request_means_ask_over_grpc(short_dir: str) -> None:
    where = os.path.join(short_dir, "enter.sock")
    refusal = {"op": "error", "message": "bad enter request: the first frame must be enter",
               "exit_code": 2}  # fmt: skip
    serve_once(where, lambda conn: refuse(conn, refusal))
    with pytest.raises(Refused):
        ask(where, list_request(CONTAINERS, OURS))


def test_the_daemons_refusal_keeps_its_message_hint_and_exit_code(short_dir: str) -> None:
    where = os.path.join(short_dir, "enter.sock")
    refusal = {"op": "error", "message": "another engine", "hint": "unset it", "exit_code": 11}
    serve_once(where, lambda conn: refuse(conn, refusal))
    with pytest.raises(EnvdError) as caught:
        ask(where, list_request(CONTAINERS, OURS))
    assert (caught.value.message, caught.value.hint, caught.value.exit_code) == (
        "another engine",
        "unset it",
        11,
    )


def test_envctl_ps_answers_from_the_enter_socket_without_grpc(world: World, short_dir: str) -> None:
    world.enter("true")
    (warm,) = world.warm.all()

    def daemon(conn: socket.socket) -> None:
        Session(world.entering, conn, os.getuid(), os.getgid(), None, world.warm.refresh).run([])

    out = envctl_against(short_dir, daemon, ["ps"])
    lines = out.stdout.splitlines()
    assert lines[-1] == "EXIT 0 GRPC False CLICK False", out.stdout + out.stderr
    assert lines[0].split() == ["PROJECT", "CONTAINER", "IMAGE", "SINCE", "LAST", "USED", "STATUS"]
    assert lines[1].split()[:3] == ["proj", warm.container_id[:12], warm.image]
    assert lines[1].split()[-1] == "running"
