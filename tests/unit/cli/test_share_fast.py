"""`envctl share image P --to REF` over the enter socket when the registry holds the image
already (envd/model/sharecheck.py): the daemon answers "already-shared" or "share-needed", the
CLI prints what the gRPC path prints, without importing grpc or click, and shares over gRPC
else."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.commands import share as share_command
from cli.context import AppContext
from cli.sharecheck import share_args, share_fast
from envd.daemon.engine_guard import EngineGuard
from envd.daemon.enter_socket import Resharer, Session
from envd.errors import EXIT_DAEMON
from envd.model.sharecheck import (
    ALREADY_SHARED,
    SHARE_NEEDED,
    already_shared,
    share_check_request,
)
from envd.services.sharing import Shared
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
DIGEST = "sha256:" + "d" * 64
REFERENCE = f"127.0.0.1:5000/team/p@{DIGEST}"
TO = "127.0.0.1:5000/team/p:v1"
SAID = "127.0.0.1:5000/team/p:v1 is envd/p:1 already: nothing to push"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    close(w)


def held(ref: str, to: str) -> tuple[Shared, str] | None:
    """A daemon whose registry holds project p's image (two layers), and nothing else."""
    if ref != "p" or not to.startswith("127.0.0.1:5000/team/p"):
        return None
    return Shared(REFERENCE, DIGEST, 0, 2, False), SAID


def checked(
    world: World,
    request: dict[str, object],
    reshare: Resharer | None = held,
    guard: EngineGuard | None = None,
) -> dict[str, object]:
    def session(conn: socket.socket) -> Session:
        return Session(world.entering, conn, os.getuid(), os.getgid(), guard, reshare=reshare)

    return one_reply(session, request)


def test_an_image_the_registry_holds_is_already_shared(world: World) -> None:
    reply = checked(world, share_check_request("p", "127.0.0.1:5000/team/p:v1", OURS))
    assert reply == {
        "op": ALREADY_SHARED,
        "reference": REFERENCE,
        "digest": DIGEST,
        "layers_skipped": 2,
        "said": [SAID],
    }
    assert already_shared(reply) == (REFERENCE, 2, [SAID])


def test_a_share_with_layers_to_move_is_left_to_grpc(world: World) -> None:
    reply = checked(world, share_check_request("q", "127.0.0.1:5000/team/q:v1", OURS))
    assert reply == {"op": SHARE_NEEDED}
    assert already_shared(reply) is None


def test_a_check_from_another_engines_environment_is_refused(world: World) -> None:
    request = share_check_request("p", "127.0.0.1:5000/team/p:v1", ["tcp://gpu:2376", ""])
    reply = checked(world, request, guard=EngineGuard(("", "")))
    assert reply["op"] == "error" and reply["exit_code"] == EXIT_DAEMON, reply


@pytest.mark.parametrize(
    ("request_", "reshare"),
    [
        ({"op": "share-check", "project": "p", "to": "", "engine": OURS}, held),
        ({"op": "share-check", "project": "", "to": "r/p:1", "engine": OURS}, held),
        ({"op": "share-check", "project": "p", "to": 3, "engine": OURS}, held),
        (share_check_request("p", "127.0.0.1:5000/team/p:v1", OURS), None),  # cannot share
    ],
)
def test_a_malformed_check_is_a_bad_request(
    world: World, request_: dict[str, object], reshare: Resharer | None
) -> None:
    reply = checked(world, request_, reshare)
    assert reply["op"] == "error" and reply["exit_code"] == 2, reply


def test_a_failing_share_is_a_bug_the_cli_hands_to_grpc(world: World) -> None:
    def broken(ref: str, to: str) -> tuple[Shared, str] | None:
        raise RuntimeError("boom")

    reply = checked(world, share_check_request("p", "r:5000/p:1", OURS), broken)
    assert reply["op"] == "error" and reply["exit_code"] == 3, reply


@pytest.mark.parametrize(
    "reply",
    [
        {"op": "up-to-date", "image": "envd/p:1", "image_id": "x", "environment_hash": ""},
        {"op": ALREADY_SHARED, "reference": "r/p:1", "digest": DIGEST, "layers_skipped": 1,
         "said": []},  # not NAME@DIGEST
        {"op": ALREADY_SHARED, "reference": REFERENCE, "digest": DIGEST, "layers_skipped": True,
         "said": []},
        {"op": ALREADY_SHARED, "reference": REFERENCE, "digest": DIGEST, "layers_skipped": -1,
         "said": []},
        {"op": ALREADY_SHARED, "reference": REFERENCE, "digest": DIGEST, "layers_skipped": 1,
         "said": [3]},
    ],
)  # fmt: skip
def test_a_reply_that_is_not_a_share_check_answer_is_rejected(reply: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        already_shared(reply)


# ---------------------------------------------------------------- the CLI's side


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["share", "image", "p", "--to", "r/p:1"], ("p", "r/p:1")),
        (["share", "image", "--to", "r/p:1", "p"], ("p", "r/p:1")),
        (["share", "image", "p", "--to=r/p:1"], ("p", "r/p:1")),
        (["share", "image", "p", "--to", "r/p:1", "--pin"], None),
        (["share", "image", "p", "-o", "p.tar.gz"], None),
        (["share", "image", "p", "--to", "r/p:1", "--to", "r/p:2"], None),
        (["share", "image", "p", "q", "--to", "r/p:1"], None),
        (["share", "image", "p", "--to"], None),
        (["share", "image", "p"], None),
        (["share", "image", "--help"], None),
        (["share", "run", "r1", "--to", "r/p:1"], None),
    ],
)
def test_only_a_plain_share_to_a_registry_is_asked_on_the_socket(
    args: list[str], parsed: tuple[str, str] | None
) -> None:
    assert share_args(args) == parsed


class ShareClient:
    """The gRPC path's client, answering as the daemon does for an unchanged image."""

    def share(self, request: pb.ShareRequest) -> Iterator[pb.ShareEvent]:
        assert (request.project.ref, request.to, request.pin) == (
            "p",
            "127.0.0.1:5000/team/p:v1",
            False,
        )
        yield pb.ShareEvent(progress=pb.Progress(step="push", message=SAID))
        yield pb.ShareEvent(
            result=pb.ShareResult(
                reference=REFERENCE, digest=DIGEST, layers_pushed=0, layers_skipped=2
            )
        )


def test_the_already_shared_lines_are_what_the_grpc_path_prints(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    short_dir: str,  # noqa: F811
) -> None:
    context = AppContext()
    monkeypatch.setattr(context, "client", lambda start=True: ShareClient())
    by_grpc = CliRunner().invoke(
        share_command.share_image, ["p", "--to", "127.0.0.1:5000/team/p:v1"], obj=context
    )
    assert by_grpc.exit_code == 0, by_grpc.output
    assert by_grpc.stdout == f"{REFERENCE}\n"
    where = Path(short_dir) / "run" / "enter.sock"
    where.parent.mkdir()
    reply = {"op": ALREADY_SHARED, "reference": REFERENCE, "digest": DIGEST,
             "layers_skipped": 2, "said": [SAID]}  # fmt: skip
    served = serve_once(str(where), lambda conn: refuse(conn, reply))
    monkeypatch.setenv("ENVD_HOME", short_dir)
    assert share_fast(["share", "image", "p", "--to", "127.0.0.1:5000/team/p:v1"]) is True
    served.join(timeout=10)
    fast = capsys.readouterr()
    assert (fast.out, fast.err) == (by_grpc.stdout, by_grpc.stderr)


@pytest.mark.parametrize(
    "reply",
    [{"op": SHARE_NEEDED}, *REFUSALS],
)
def test_anything_but_already_shared_goes_on_to_grpc(
    reply: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    short_dir: str,  # noqa: F811
) -> None:
    args = ["share", "image", "p", "--to", "r:5000/p:1"]
    assert not fast_path_answers(short_dir, reply, monkeypatch, share_fast, args)
    assert capsys.readouterr() == ("", "")


def test_no_daemon_goes_on_to_grpc(
    monkeypatch: pytest.MonkeyPatch,
    short_dir: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("ENVD_HOME", short_dir)  # nothing listens there
    assert share_fast(["share", "image", "p", "--to", "r:5000/p:1"]) is False


def test_envctl_share_answers_from_the_enter_socket_without_grpc(
    world: World,
    short_dir: str,  # noqa: F811
) -> None:
    def daemon(conn: socket.socket) -> None:
        Session(world.entering, conn, os.getuid(), os.getgid(), reshare=held).run([])

    out = envctl_against(short_dir, daemon, ["share", "image", "p", "--to", TO])
    assert out.stdout.splitlines() == [REFERENCE, "EXIT 0 GRPC False CLICK False"], out.stderr
    assert out.stderr == f"[push] {SAID}\nlayers: 0 pushed, 2 already there\n"
