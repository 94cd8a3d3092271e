"""envctl runs import, trace and rerun on the CLI side: bounded reads of the files given, and
the question before an imported run's command runs (fakes for the daemon's client)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import cli.commands.runs as runs_cli
from cli.context import AppContext
from envd.model.provenance import MAX_STATEMENT_CHARS
from envd.v1 import envd_pb2 as pb
from tests.conftest import ROOT


def envctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real envctl; these refusals come before it talks to any daemon."""
    env = {**os.environ, "ENVD_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,  # a hang is a failure here, not a stuck suite
    )


@pytest.mark.parametrize("command", [("trace",), ("runs", "import"), ("trace", "--provenance")])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_special_files_are_refused_at_once(
    tmp_path: Path, command: tuple[str, ...], kind: str
) -> None:
    """`trace /dev/zero` spun, `trace FIFO` and `runs import FIFO` hung, `runs import
    /dev/zero` grew to 23.7 GB: each is now a refusal naming the file and what it is."""
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        what = "a FIFO"
    else:
        path = Path("/dev/zero")
        what = "a device"
    args = [*command, str(path)]
    if command[-1] == "--provenance":
        regular = tmp_path / "model.json"
        regular.write_text("{}")
        args = ["trace", str(regular), "--provenance", str(path)]
    proc = envctl(tmp_path / "home", *args)
    assert proc.returncode == 2, proc.stderr
    assert f"{path} is {what}, not a regular file; refused" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_statement_over_the_bound_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    with open(big, "wb") as file:
        file.truncate(MAX_STATEMENT_CHARS + 4096)  # sparse: costs no disk
    proc = envctl(tmp_path / "home", "runs", "import", str(big))
    assert proc.returncode == 9, proc.stderr
    assert "over 64 MiB" in proc.stderr and "not imported" in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{}")
    proc = envctl(tmp_path / "home", "runs", "import", str(bad))
    assert proc.returncode == 9 and "not UTF-8" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ rerun of an imported run


class FakeClient:
    def __init__(self, imported: bool) -> None:
        run = pb.RunRecord(
            id="forged000001",
            project="victim",
            command=["sh", "-c", "touch /workspace/PWNED"],
            environment_hash="sha256:" + "e" * 64,
            imported=imported,
            origin="s.json" if imported else "",
        )
        self.reply = pb.CheckRerunReply(
            run=run, project="victim", environment="the project's current image", directory="/"
        )
        self.requests: list[pb.CheckRerunRequest] = []

    def check_rerun(self, request: pb.CheckRerunRequest, timeout: float = 0) -> Any:
        self.requests.append(request)
        return self.reply


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    commands: list[list[str]] = []

    def run_again(obj: Any, project: str, command: list[str], directory: str) -> tuple[int, str]:
        commands.append(command)
        return 0, ""

    monkeypatch.setattr(runs_cli, "_run_again", run_again)
    return commands


def rerun(client: FakeClient, *args: str, input: str | None = None) -> Any:
    obj = AppContext(_client=client)  # type: ignore[arg-type]
    return CliRunner().invoke(runs_cli.rerun_cmd, ["forged000001", *args], obj=obj, input=input)


def test_an_imported_run_is_not_rerun_without_a_terminal_or_yes(ran: list[list[str]]) -> None:
    """F7: the statement's command ran at once, with no prompt."""
    result = rerun(FakeClient(imported=True))
    assert result.exit_code == 1
    assert ran == []
    assert "imported from s.json" in result.output
    assert "command:      sh -c 'touch /workspace/PWNED'" in result.output
    assert "project:      victim" in result.output
    assert "environment:  sha256:" + "e" * 64 in result.output
    assert "not run without confirmation" in str(result.exception)
    assert "--yes" in (getattr(result.exception, "hint", "") or "")


def test_an_imported_run_runs_with_yes_or_when_the_user_agrees(
    ran: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rerun(FakeClient(imported=True), "--yes").exit_code == 0
    assert ran == [["sh", "-c", "touch /workspace/PWNED"]]
    monkeypatch.setattr(runs_cli, "_can_ask", lambda: True)
    declined = rerun(FakeClient(imported=True), input="n\n")
    assert declined.exit_code == 1 and len(ran) == 1
    assert "run this command?" in declined.output
    assert rerun(FakeClient(imported=True), input="y\n").exit_code == 0
    assert len(ran) == 2


def test_a_local_run_is_rerun_without_a_question(ran: list[list[str]]) -> None:
    client = FakeClient(imported=False)
    assert rerun(client, "--project", "other").exit_code == 0
    assert ran == [["sh", "-c", "touch /workspace/PWNED"]]
    assert client.requests[0].project.ref == "other"
