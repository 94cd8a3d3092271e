"""The daemon's side of the enter hot path (envd/daemon/enter_socket.py): a CLI's connection,
fakes for the engine, the builder and the agent."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.agent.agent import Frame, encode, take_frames
from envd.daemon.enter_socket import Session
from envd.errors import EXIT_CONTAINER
from envd.services.entering import EnterCall
from tests.unit.services.test_entering import World, close, make_world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    close(w)


class DyingAgent:
    """An agent that starts every command, then dies when told (as in `docker kill`)."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="envd-agent-", dir="/tmp")  # sun_path: 108 bytes
        self.path = os.path.join(self.folder, "agent.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.die = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 8)
                for fd in fds:
                    os.close(fd)
                if data:  # (not a probe)
                    conn.sendall(encode({"op": "started", "pid": 4242}))
                    self.die.wait(10)

    def close(self) -> None:
        self.die.set()
        self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def agent() -> Iterator[DyingAgent]:
    dying = DyingAgent()
    yield dying
    dying.close()


def next_frame(conn: socket.socket, buf: bytearray) -> Frame:
    while not (frames := take_frames(buf)):
        data = conn.recv(1 << 16)
        assert data, "the daemon closed the connection without a frame"
        buf += data
    buf[:0] = b"".join(encode(f) for f in frames[1:])
    return frames[0]


def test_a_warm_container_dying_under_a_command_is_exit_10_and_recorded(
    world: World, agent: DyingAgent
) -> None:
    """(`docker kill` of the warm container: its agent goes away without the command's status.)"""
    world.enter("true")
    warm = world.warm.all()[0]
    warm.agent, warm.agent_user = agent.path, f"{os.getuid()}:{os.getgid()}"
    cli, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open(os.devnull, os.O_RDWR)
    session = Session(world.entering, daemon, os.getuid(), os.getgid())
    fds: list[int] = []
    serving = threading.Thread(target=session.run, args=(fds,), daemon=True)
    serving.start()
    try:
        request = {"op": "enter", "project": str(world.project), "argv": ["sleep", "30"]}
        socket.send_fds(cli, [encode(request)], [null, null, null])
        buf = bytearray()
        assert next_frame(cli, buf)["op"] == "started"
        agent.die.set()  # the container dies, its agent with it
        reply = next_frame(cli, buf)
        serving.join(timeout=10)
    finally:
        cli.close()
        daemon.close()
        os.close(null)
    assert reply["op"] == "error" and reply["exit_code"] == EXIT_CONTAINER == 10, reply
    assert "warm container" in reply["message"] and "died" in reply["message"], reply
    assert world.store.runs("proj", 10)[0].exit_code == 10


# The pure half: what a CLI's first frame becomes, and what a bad one gets back.

REQUEST: Frame = {
    "op": "enter",
    "project": "/home/ada/proj",
    "argv": ["python", "-m", "train"],
    "cwd": "/home/ada/proj/src",
    "gpus": "all",
    "tty": True,
    "winsize": [40, 120],
    "term": "xterm-256color",
    "user_name": "ada",
}


def session() -> tuple[Session, socket.socket]:
    cli, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Session(None, daemon, 1234, 5678), cli  # type: ignore[arg-type]  # (parse needs none)


def test_a_request_becomes_an_enter_call_as_the_caller() -> None:
    s, cli = session()
    with cli, s.conn:
        call, winsize = s.parse(dict(REQUEST), [0, 1, 2])
    assert call == EnterCall(
        project="/home/ada/proj",
        command=("python", "-m", "train"),
        gpus="all",
        tty=True,
        cwd="/home/ada/proj/src",
        uid=1234,
        gid=5678,
        user_name="ada",
        fast=True,
        term="xterm-256color",
    )
    assert winsize == (40, 120)
    bare = {"op": "enter", "argv": ["true"]}  # what an older CLI may leave out is ""
    call, winsize = s.parse(bare, [0, 1, 2])
    assert (call.project, call.cwd, call.tty, call.term, winsize) == ("", "", False, "", None)


@pytest.mark.parametrize(
    ("change", "fds", "message"),
    [
        ({"op": "run"}, 3, "the first frame must be enter, not 'run'"),
        ({}, 2, "enter needs 3 fds (stdin, stdout, stderr), got 2"),
        ({"argv": "true"}, 3, "argv must be a list of strings"),
        ({"argv": ["true", 1]}, 3, "argv must be a list of strings"),
        ({"cwd": 7}, 3, "project, cwd, gpus, term and user_name are strings"),
        ({"winsize": [24]}, 3, "winsize must be [rows, cols]"),
    ],
)
def test_a_malformed_request_is_refused_with_the_reason(
    change: Frame, fds: int, message: str
) -> None:
    s, cli = session()
    with cli, s.conn, pytest.raises(ValueError) as refused:
        s.parse({**REQUEST, **change}, list(range(fds)))
    assert str(refused.value) == message


def test_a_bad_request_gets_one_error_frame_with_exit_2_and_nothing_runs(world: World) -> None:
    cli, daemon = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        request = {**REQUEST, "project": str(world.project), "argv": "not a list"}
        socket.send_fds(cli, [encode(request)], [null, null, null])
        fds: list[int] = []
        Session(world.entering, daemon, os.getuid(), os.getgid()).run(fds)
        daemon.close()
        reply = next_frame(cli, bytearray())
        assert cli.recv(1) == b""  # and nothing after it
    finally:
        cli.close()
        for fd in [null, *fds]:
            os.close(fd)
    assert reply == {
        "op": "error",
        "message": "bad enter request: argv must be a list of strings",
        "hint": None,
        "exit_code": 2,
    }
    assert world.store.runs("proj", 10) == []


def test_signals_sent_with_the_request_are_kept_for_the_command() -> None:
    s, cli = session()
    with cli, s.conn:
        signal_frame = {"op": "signal", "signal": 2}
        socket.send_fds(cli, [encode(REQUEST) + encode(signal_frame)], [0, 1, 2])
        fds: list[int] = []
        try:
            assert s.first_frame(fds) == REQUEST
            assert len(fds) == 3
        finally:
            for fd in fds:
                os.close(fd)
        assert take_frames(s.buf) == [signal_frame]
