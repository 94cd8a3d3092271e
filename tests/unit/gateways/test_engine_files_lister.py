"""The volume's lister (envd/gateways/engine_files.py): listings read from an exec kept
waiting, in the engine's 8-byte frames, the token and status after the last NUL."""

from __future__ import annotations

import socket
import struct
import threading

from envd.gateways.engine_files import _Lister
from envd.model.projectsync import FILE, parse_find


def frame(kind: int, data: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + struct.pack(">I", len(data)) + data


def lister_on(sock: socket.socket) -> _Lister:
    lister = _Lister(None, "c", "/w", on_close=lambda: None)  # type: ignore[arg-type]
    lister._sock = sock
    lister._ready.set()
    return lister


LISTING = b"f\x003\x001733071234.5\x00644\x00a.py\x00\x00"


def test_a_listing_split_over_frames_and_reads_is_whole() -> None:
    ours, theirs = socket.socketpair()
    lister = lister_on(ours)
    token = lister._token
    reply = frame(1, LISTING[:7]) + frame(2, b"noise") + frame(1, LISTING[7:] + b"\0" + token)
    reply += frame(1, b"1\n")

    def engine() -> None:
        assert theirs.recv(10) == b"\n"
        for i in range(0, len(reply), 5):  # in small pieces, as a network may
            theirs.sendall(reply[i : i + 5])

    t = threading.Thread(target=engine)
    t.start()
    answer = lister.ask()
    t.join()
    assert answer is not None
    code, out, _ = answer
    assert code == 1 and parse_find(out).files["a.py"].kind == FILE
    ours.close()
    theirs.close()


def test_a_lister_that_ended_answers_none_and_an_empty_volume_is_empty() -> None:
    ours, theirs = socket.socketpair()
    lister = lister_on(ours)

    def engine() -> None:
        theirs.recv(10)
        theirs.sendall(frame(1, b"\0" + lister._token + b"0\n"))
        theirs.recv(10)
        theirs.close()  # the exec ended (its container stopped)

    t = threading.Thread(target=engine)
    t.start()
    assert lister.ask() == (0, b"", b"")
    assert lister.ask() is None
    t.join()
    lister.close()
    assert lister.ask() is None


def test_the_remote_exec_is_docker_exec_with_the_plans_user_folder_and_env() -> None:
    from envd.gateways.docker_cli import exec_argv

    env = {"B": "2", "A": "1"}
    argv = exec_argv("c1", ("make", "-j2"), "1000:1000", "/workspace/src", env, True)
    assert argv == ["docker", "exec", "-i", "-t", "-u", "1000:1000", "-w", "/workspace/src",
                    "-e", "A=1", "-e", "B=2", "c1", "make", "-j2"]  # fmt: skip
    assert "-t" not in exec_argv("c1", ("true",), "0:0", "/workspace", {}, False)
