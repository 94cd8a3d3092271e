"""`envctl build P` over the enter socket when the image is up to date
(envd/model/buildcheck.py): the daemon answers "up-to-date" or "build-needed", the CLI prints
what the gRPC path prints then, without importing grpc or click, and builds over gRPC else."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.buildcheck import build_fast
from cli.commands import build as build_command
from cli.context import AppContext
from envd.daemon.engine_guard import EngineGuard
from envd.daemon.enter_socket import Session
from envd.errors import EXIT_DAEMON
from envd.model.buildcheck import (
    BUILD_NEEDED,
    UP_TO_DATE,
    build_check_request,
    up_to_date_image,
)
from envd.v1 import envd_pb2 as pb
from tests.unit.cli.test_ps_fast import (  # noqa: F401
    REFUSALS,
    envctl_against,
    fast_path_answers,
    one_reply,
    refuse,
    serve_once,
    short_dir,
)
from tests.unit.services.test_entering import World, close, make_world

OURS = ["", ""]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    close(w)


def checked(
    world: World, request: dict[str, object], guard: EngineGuard | None = None
) -> dict[str, object]:
    return one_reply(
        lambda conn: Session(world.entering, conn, os.getuid(), os.getgid(), guard), request
    )


def test_a_built_project_is_up_to_date_with_its_image_and_environment(world: World) -> None:
    world.enter("true")  # builds the image
    image = world.builder.current
    assert image is not None
    reply = checked(world, build_check_request(str(world.project), OURS))
    record = world.store.image(image)
    assert record is not None
    assert reply == {
        "op": UP_TO_DATE,
        "image": image,
        "image_id": record.image_id,
        "environment_hash": f"env-of-{record.image_id[-4:]}",
    }
    assert up_to_date_image(reply) == (image, f"env-of-{record.image_id[-4:]}")


def test_a_project_that_needs_a_build_is_left_to_grpc(world: World) -> None:
    reply = checked(world, build_check_request(str(world.project), OURS))
    assert reply == {"op": BUILD_NEEDED}
    assert up_to_date_image(reply) is None
    assert world.builder.builds == []  # the check itself never builds


def test_an_unknown_project_is_left_to_grpc_which_says_why(world: World) -> None:
    assert checked(world, build_check_request("no-such-project", OURS)) == {"op": BUILD_NEEDED}


def test_a_check_from_another_engines_environment_is_refused(world: World) -> None:
    world.enter("true")
    guard = EngineGuard(("", ""))
    reply = checked(world, build_check_request(str(world.project), ["tcp://gpu:2376", ""]), guard)
    assert reply["op"] == "error" and reply["exit_code"] == EXIT_DAEMON, reply


def test_a_check_without_a_project_is_a_bad_request(world: World) -> None:
    reply = checked(world, {"op": "build-check", "project": "", "engine": OURS})
    assert reply["op"] == "error" and reply["exit_code"] == 2, reply


@pytest.mark.parametrize(
    "reply",
    [
        {"op": "containers", "containers": []},
        {"op": UP_TO_DATE, "image": "", "image_id": "x", "environment_hash": ""},
        {"op": UP_TO_DATE, "image": "envd/p:1", "image_id": 3, "environment_hash": ""},
    ],
)
def test_a_reply_that_is_not_a_build_check_answer_is_rejected(reply: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        up_to_date_image(reply)


# ---------------------------------------------------------------- the CLI's side


def test_the_up_to_date_lines_are_what_the_grpc_path_prints(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    short_dir: str,  # noqa: F811
) -> None:
    result = pb.BuildResult(image="envd/p:1", image_id="sha256:1", cached=True,
                            environment_hash="sha256:" + "e" * 64)  # fmt: skip
    monkeypatch.setattr(build_command, "run_build", lambda *a: result)
    by_grpc = CliRunner().invoke(build_command.build_cmd, ["p"], obj=AppContext()).output
    assert by_grpc.startswith("envd/p:1 is up to date\n")
    where = Path(short_dir) / "run" / "enter.sock"
    where.parent.mkdir()
    reply = {"op": UP_TO_DATE, "image": result.image, "image_id": result.image_id,
             "environment_hash": result.environment_hash}  # fmt: skip
    served = serve_once(str(where), lambda conn: refuse(conn, reply))
    monkeypatch.setenv("ENVD_HOME", short_dir)
    assert build_fast(["build", "p"]) is True
    served.join(timeout=10)
    assert capsys.readouterr().out == by_grpc


@pytest.mark.parametrize(
    "reply",
    [{"op": BUILD_NEEDED}, *REFUSALS],
)
def test_anything_but_up_to_date_goes_on_to_grpc(
    reply: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    short_dir: str,  # noqa: F811
) -> None:
    assert not fast_path_answers(short_dir, reply, monkeypatch, build_fast, ["build", "p"])
    assert capsys.readouterr().out == ""


def test_no_daemon_and_options_go_on_to_click(
    monkeypatch: pytest.MonkeyPatch,
    short_dir: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("ENVD_HOME", short_dir)  # nothing listens there
    assert build_fast(["build", "p"]) is False
    for args in (["build", "--dry-run"], ["build", "p", "--json"], ["build", "--help"]):
        assert build_fast(args) is False  # (no socket asked: it would refuse above anyway)


def test_envctl_build_answers_from_the_enter_socket_without_grpc(
    world: World,
    short_dir: str,  # noqa: F811
) -> None:
    world.enter("true")
    image = world.builder.current

    def daemon(conn: socket.socket) -> None:
        Session(world.entering, conn, os.getuid(), os.getgid()).run([])

    out = envctl_against(short_dir, daemon, ["build", str(world.project)])
    assert out.stdout.splitlines() == [
        f"{image} is up to date",
        f"environment env-of-{world.store.image(image).image_id[-4:]}",  # type: ignore[union-attr,arg-type]
        "EXIT 0 GRPC False CLICK False",
    ], out.stdout + out.stderr
