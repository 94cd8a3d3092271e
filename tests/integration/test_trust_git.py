"""Issue 24, F1 end to end: git configuration a container writes into the bind-mounted project
never runs on the host. The daemon reads a run's commit, dirty flag and diff with libgit2,
which runs no fsmonitor, textconv, filter, hook, pager or external diff."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template
from tests.integration.conftest import DefaultBuildCache, from_default_cache

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def project(shared: Envctl, default_build_cache: DefaultBuildCache) -> Path:
    """environments/default with a `runs:` section (so the diff is read too), built once
    through the worker's build cache (the lock's inputs leave out `name:` and `runs:`)."""
    path = copy_template("default", shared.cwd / "gitp")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "name: gitp\nruns:\n  params: [params.yaml]\n")
    (path / "params.yaml").write_text("rate: 1\n")
    from_default_cache(shared, path, "gitp", default_build_cache)
    return path


def planted_config(marks: Path) -> str:
    """.git/config lines whose commands each touch a file in `marks` (a host folder the
    container cannot see): what a malicious package in the container would append."""

    def touch(name: str, then: str) -> str:
        return f"\"sh -c 'touch {marks}/{name}; {then}' #\""

    return (
        "[core]\n"
        f"\tfsmonitor = {touch('fsmonitor', 'true')}\n"
        f"\tpager = {touch('pager', 'cat')}\n"
        '[diff "x"]\n'
        f"\ttextconv = {touch('textconv', 'cat $0')}\n"
        '[filter "x"]\n'
        f"\tclean = {touch('clean', 'cat')}\n"
        f"\tprocess = {touch('process', 'true')}\n"
        "[diff]\n"
        f"\texternal = {touch('external', 'true')}\n"
    )


def in_container(shared: Envctl, project: Path, script: str) -> None:
    """Run `script` with sh inside the project's container (no git there is needed)."""
    done = shared("enter", str(project), "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr


def last_run(shared: Envctl, project: Path) -> dict[str, object]:
    runs = json.loads(shared.ok("--json", "runs", str(project))).get("runs", [])
    assert runs, "no run was recorded"
    shown: dict[str, object] = json.loads(shared.ok("--json", "runs", "show", str(runs[0]["id"])))
    return shown


def printf_file(path: str, text: str) -> str:
    """A shell command that writes `text` to `path` (inside the container)."""
    return f"printf '%s' {shlex.quote(text)} > {path}"


def test_config_a_container_plants_in_dot_git_never_runs_on_the_host(
    shared: Envctl, project: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    shutil.rmtree(project / ".git", ignore_errors=True)
    (project / "tracked.py").write_text("x = 1\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "start")
    head = git(project, "rev-parse", "HEAD")

    in_container(
        shared,
        project,
        f"cat >> /workspace/.git/config <<'EOF'\n{planted_config(marks)}EOF\n"
        "printf '* diff=x filter=x\\n' > /workspace/.gitattributes",
    )
    (project / "tracked.py").write_text("x = 2\n")  # dirty: the diff is read too
    for _ in range(2):
        shared.ok("enter", str(project), "--", "true")
        run = last_run(shared, project)
        assert list(marks.iterdir()) == [], "a command from .git/config ran on the host"
        assert run.get("git_commit") == head and run.get("git_dirty") is True
        assert run.get("diff_sha256")
    shown = shared.ok("runs", "show", "--diff", str(last_run(shared, project)["id"]))
    assert "-x = 1\n+x = 2" in shown


def test_a_dot_git_made_inside_the_container_runs_nothing_on_the_host(
    shared: Envctl, project: Path, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    shutil.rmtree(project / ".git", ignore_errors=True)
    (project / ".gitattributes").unlink(missing_ok=True)
    config = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n" + planted_config(marks)
    in_container(
        shared,
        project,
        "mkdir -p /workspace/.git/objects /workspace/.git/refs/heads && "
        + printf_file("/workspace/.git/HEAD", "ref: refs/heads/main\n")
        + " && "
        + printf_file("/workspace/.git/config", config)
        + " && printf '* diff=x filter=x\\n' > /workspace/.gitattributes",
    )
    assert (project / ".git" / "config").is_file()
    for _ in range(2):
        shared.ok("enter", str(project), "--", "true")
        run = last_run(shared, project)
        assert list(marks.iterdir()) == [], "a command from the planted .git ran on the host"
        assert not run.get("git_commit") and not run.get("git_dirty")  # an empty repository
    shutil.rmtree(project / ".git")
