"""The CLI's hand-written frame codec (cli/entering.py: no `json` import on the hot path) and the
agent's, which the daemon uses (envd/agent/agent.py): each reads what the other writes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cli.entering import _HEADER, _dumps, _frame, _loads, _take_frame, enter_socket_path
from envd.agent.agent import HEADER, MAX_FRAME, encode, take_frames
from envd.paths import resolve_paths

ENTER = {
    "op": "enter",
    "project": "/home/ada/proj",
    "argv": ["sh", "-c", 'echo "é" \\ \n\t\x01'],
    "cwd": "/home/ada/proj/src",
    "gpus": "",
    "tty": True,
    "winsize": [24, 80],
    "term": "xterm-256color",
    "user_name": "ada",
    "engine": ["", ""],
}


@pytest.mark.parametrize(
    "value",
    [
        {"op": "enter", "argv": ["sh", "-c", 'echo "é" \\ \n\t\x01', "\udcff"], "tty": True},
        {"winsize": None, "rows": -24, "f": 1.5e-9, "no": False, "nested": [[], {}, [{"a": 1}]]},
        [],
        "plain",
    ],
)
def test_the_cli_speaks_json_without_the_json_module(value: Any) -> None:
    assert json.loads(_dumps(value)) == value
    assert _loads(json.dumps(value).encode()) == value
    assert _loads(json.dumps(value, indent=2).encode()) == value


@pytest.mark.parametrize("bad", [b"{", b"[1 2]", b'{"a" 1}', b"tru", b"1 x", b'{"a":1,}x'])
def test_the_cli_refuses_bad_json(bad: bytes) -> None:
    with pytest.raises((ValueError, IndexError)):
        _loads(bad)


def test_both_sides_frame_alike() -> None:
    assert _HEADER.format == HEADER.format and _HEADER.size == HEADER.size


def test_the_daemon_reads_the_cli_frames_even_when_they_come_in_pieces() -> None:
    signal = {"op": "signal", "signal": 2}
    sent = _frame(ENTER) + _frame(signal)
    buf = bytearray()
    read: list[dict[str, Any]] = []
    for i in range(0, len(sent), 7):  # a stream socket cuts where it likes
        buf += sent[i : i + 7]
        read += take_frames(buf)
    assert read == [ENTER, signal] and not buf


def test_the_cli_reads_the_daemon_frames_one_at_a_time() -> None:
    started = {"op": "started", "run_id": "r1", "pid": 42}
    done = {"op": "exit", "status": 130, "signal": 2, "error": None}
    buf = bytearray(encode(started) + encode(done)[:5])
    assert _take_frame(buf) == started
    assert _take_frame(buf) is None and len(buf) == 5  # half a frame stays for the next read
    buf += encode(done)[5:]
    assert _take_frame(buf) == done and not buf


def test_the_daemon_refuses_a_frame_over_the_limit_or_not_an_object() -> None:
    with pytest.raises(ValueError, match="frame of"):
        take_frames(bytearray(HEADER.pack(MAX_FRAME + 1)))
    with pytest.raises(ValueError, match="not a JSON object"):
        take_frames(bytearray(_frame([1, 2])))


def test_the_cli_finds_the_enter_socket_where_the_daemon_puts_it() -> None:
    for env in ({"ENVD_HOME": "/tmp/h"}, {"HOME": "/home/ada"}, {"ENVD_HOME": "rel/h"}):
        assert enter_socket_path(env) == str(resolve_paths(env).enter_socket)


def test_the_cli_refuses_a_frame_that_is_not_an_object() -> None:
    buf = bytearray(HEADER.pack(4) + b"null")
    with pytest.raises(ValueError, match="not a JSON object"):
        _take_frame(buf)
