"""One daemon, one engine: a command whose environment names another is refused, clearly."""

from __future__ import annotations

import pytest

from cli.entering import engine_named
from envd.daemon.engine_guard import EngineGuard, decode, describe, encode, engine_choice
from envd.errors import EXIT_DAEMON, DaemonUnavailable
from envd.paths import ENGINE_VARIABLES


def test_the_choice_is_what_the_environment_names() -> None:
    assert engine_choice({}) == ("", "")
    assert engine_choice({"DOCKER_HOST": "tcp://gpu:2376", "HOME": "/x"}) == ("tcp://gpu:2376", "")
    assert decode(encode(("ssh://me@gpu", "ctx"))) == ("ssh://me@gpu", "ctx")
    assert decode(b"") == ("", "")


def test_the_same_engine_or_a_silent_client_passes() -> None:
    guard = EngineGuard(("tcp://gpu:2376", ""))
    guard.check(("tcp://gpu:2376", ""))
    guard.check(None)  # another gRPC client that says nothing


def test_another_engine_is_refused_naming_both_and_how_to_fix() -> None:
    guard = EngineGuard(("", ""))
    with pytest.raises(DaemonUnavailable) as caught:
        guard.check(("ssh://me@gpu-server", ""))
    err = caught.value
    assert err.exit_code == EXIT_DAEMON
    assert "DOCKER_HOST=ssh://me@gpu-server" in err.message
    assert "no DOCKER_HOST or DOCKER_CONTEXT" in err.message
    assert err.hint and "envctl daemon stop" in err.hint
    assert describe(("", "gpu")) == "DOCKER_CONTEXT=gpu"


def test_the_fast_path_names_the_same_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli/entering.py cannot import envd.paths (milliseconds on every enter and ps): it spells
    the variables out, and this keeps the two lists the same."""
    for i, name in enumerate(ENGINE_VARIABLES):
        monkeypatch.setenv(name, f"value-{i}")
    assert engine_named() == [f"value-{i}" for i in range(len(ENGINE_VARIABLES))]
