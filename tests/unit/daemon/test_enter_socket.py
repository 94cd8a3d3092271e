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
