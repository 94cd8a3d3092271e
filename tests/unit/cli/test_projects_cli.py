"""envctl's side: `runs PROJECT`, packages in columns, diffs by field with counts, the notice
when a gone project's name is taken over."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.commands.fingerprint import diff_lines
from cli.commands.projects import add_cmd
from cli.commands.runs import runs_cmd
from cli.context import AppContext
from cli.output import layout
from envd.model.fingerprint import Change, FingerprintDiff
from envd.v1 import envd_pb2 as pb


class FakeClient:
    def __init__(self, projects: list[pb.Project] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.projects = projects or []

    def list_runs(self, request: pb.ListRunsRequest) -> pb.ListRunsReply:
        self.calls.append(("list_runs", request))
        run = pb.RunRecord(id="abc123", project=request.project.ref or "churn", finished=True)
        run.command.extend(["python", "train.py"])
        run.exit_code = 3
        return pb.ListRunsReply(runs=[run])

    def get_run(self, request: pb.GetRunRequest, timeout: float | None = None) -> pb.RunRecord:
        self.calls.append(("get_run", request))
        return pb.RunRecord(id=request.id, project="churn", command=["true"], finished=True)

    def list_projects(self, request: pb.ListProjectsRequest) -> pb.ListProjectsReply:
        return pb.ListProjectsReply(projects=self.projects)

    def add_project(self, request: pb.AddProjectRequest) -> pb.Project:
        return pb.Project(name="churn", path=request.path)


def invoke(command: Any, args: list[str], client: FakeClient) -> Any:
    obj = AppContext(_client=client)  # type: ignore[arg-type]
    return CliRunner().invoke(command, args, obj=obj, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "project", "limit"),
    [
        ([], "", 20),
        (["churn"], "churn", 20),
        (["churn", "-n", "5"], "churn", 5),
        (["-n", "7", "churn"], "churn", 7),
        (["--project", "churn"], "churn", 20),
        (["--project", "show"], "show", 20),  # a project named like a subcommand
    ],
)
def test_runs_takes_the_project_as_an_argument(
    args: list[str], project: str, limit: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./churn/envd.yaml: `churn` stays a name
    client = FakeClient()
    result = invoke(runs_cmd, args, client)
    assert result.exit_code == 0, result.output
    [(call, request)] = client.calls
    assert call == "list_runs" and request.project.ref == project and request.limit == limit
    assert "python train.py" in result.output and "abc123" in result.output


def test_runs_show_still_shows_one_run() -> None:
    client = FakeClient()
    result = invoke(runs_cmd, ["show", "abc123"], client)
    assert result.exit_code == 0, result.output
    assert client.calls[0][0] == "get_run" and client.calls[0][1].id == "abc123"
    assert "run          abc123" in result.output


def test_runs_refuses_two_different_projects() -> None:
    result = CliRunner().invoke(
        runs_cmd,
        ["a", "--project", "b"],
        obj=AppContext(_client=FakeClient()),  # type: ignore[arg-type]
    )
    assert result.exit_code == 2 and "two projects" in result.output


def test_layout_one_per_line_off_a_terminal_and_columns_on_one() -> None:
    items = [f"pkg{i}=1.{i}" for i in range(10)]
    assert layout(items, None) == [f"  {item}" for item in items]
    lines = layout(items, 40)
    assert len(lines) < len(items) and all(len(line) <= 40 for line in lines)
    flat = sorted(word for line in lines for word in line.split())
    assert flat == sorted(items)  # nothing lost, nothing doubled
    assert lines[0].split()[0] == "pkg0=1.0" and lines[1].split()[0] == "pkg1=1.1"  # down first
    assert layout(items, 5) == [f"  {item}" for item in items]  # too narrow: one column
    assert layout([], 80) == []


def test_a_diff_groups_packages_with_counts() -> None:
    changes = (
        Change("environment", "python_packages", "added", "six", new="1.16.0"),
        Change("environment", "python_packages", "removed", "idna", old="3.4"),
        Change("environment", "python_packages", "changed", "numpy", "1.26.0", "1.26.4"),
        Change("environment", "python_version", "changed", "", "3.11.1", "3.11.2"),
    )
    lines = diff_lines(FingerprintDiff(changes, False, True), "a", "b", None)
    assert lines[:3] == ["--- a", "+++ b", "environment: 4 difference(s)"]
    assert "  ~ python_version: 3.11.1 -> 3.11.2" in lines
    assert "  python_packages (3: 1 added, 1 removed, 1 changed):" in lines
    assert "    + six 1.16.0" in lines and "    - idna 3.4" in lines
    assert "    ~ numpy 1.26.0 -> 1.26.4" in lines
    assert lines[-1] == "host: identical"
    wide = diff_lines(FingerprintDiff(changes, False, True), "a", "b", 200)
    assert any("+ six 1.16.0" in line and "- idna 3.4" in line for line in wide)
    same = diff_lines(FingerprintDiff((), True, True), "a", "b", None)
    assert same == ["a and b are identical", "environment: identical", "host: identical"]


def test_taking_over_a_gone_projects_name_is_noticed(tmp_path: Path) -> None:
    gone = pb.Project(name="churn", path="/gone/churn")
    result = CliRunner().invoke(
        add_cmd,
        [str(tmp_path)],
        obj=AppContext(_client=FakeClient([gone])),  # type: ignore[arg-type]
    )
    assert result.exit_code == 0
    assert "/gone/churn" in result.output and "is gone" in result.output
    quiet = CliRunner().invoke(
        add_cmd,
        [str(tmp_path)],
        obj=AppContext(_client=FakeClient()),  # type: ignore[arg-type]
    )
    assert "notice" not in quiet.output
