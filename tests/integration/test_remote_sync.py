"""The project on a remote engine: synced into a volume there around each `enter`.

The engine (tests/integration/remote_engine.py) cannot see the project's folder; what a
command there sees of the project, and what it makes, travels through the sync only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envd.gateways.engine import Engine
from envd.gateways.engine_files import EngineFiles
from envd.services.projectsync import ProjectSync
from tests.conftest import Envctl, stop_daemon
from tests.integration.conftest import remote_runner

pytestmark = pytest.mark.integration


def remote_docker(host: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, remote_docker_host: str) -> Iterator[Envctl]:
    root = tmp_path_factory.mktemp("remote-sync")
    runner = remote_runner(root, remote_docker_host)
    yield runner
    runner("stop", "--all", timeout=60)
    stop_daemon(runner)


@pytest.fixture(scope="module")
def project(remote: Envctl, default_project: Path) -> Path:
    """environments/default (its lock too), with a few files of its own, built on the engine."""
    path = remote.cwd / "synced"
    path.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (path / name).write_bytes((default_project / name).read_bytes())
    (path / "src").mkdir()
    (path / "src" / "train.py").write_text("print('v1')\n")
    (path / "data").mkdir()
    (path / "data" / "x.csv").write_text("1,2\n")
    (path / ".git").mkdir()
    (path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    remote.ok("build", str(path))
    return path


def enter(remote: Envctl, path: Path, script: str) -> subprocess.CompletedProcess[str]:
    return remote("enter", str(path), "--", "sh", "-c", script, timeout=300)


def warm_container(host: str, project: str) -> str:
    found = remote_docker(host, "ps", "-q", "--filter", f"label=envd.project={project}")
    return found.stdout.split()[0]


def test_what_a_command_writes_comes_back_and_host_edits_go_there(
    remote: Envctl, project: Path, remote_docker_host: str
) -> None:
    done = enter(remote, project, "echo hi > out.txt; ls -a; cat src/train.py")
    assert done.returncode == 0, done.stderr
    assert (project / "out.txt").read_text() == "hi\n"
    listed = done.stdout.split()
    assert "envd.yaml" in listed and "src" in listed and ".git" not in listed
    assert "v1" in done.stdout
    (project / "src" / "train.py").write_text("print('v2')\n")
    again = enter(remote, project, "cat src/train.py")
    assert again.returncode == 0 and again.stdout == "print('v2')\n", again.stderr
    # Its status is the command's, as on a local engine.
    assert enter(remote, project, "exit 3").returncode == 3
    # The warm container mounts the project's volume, not a folder of this machine.
    volumes = remote_docker(
        remote_docker_host, "volume", "ls", "-q", "--filter", "label=envd.role=project-files"
    ).stdout.split()
    mine = [v for v in volumes if v.startswith(f"{remote.namespace}-")]  # other tests' homes too
    assert mine == [f"{remote.namespace}-project-dflt"], volumes


def test_deleted_here_is_gone_there_and_deleted_there_is_gone_here(
    remote: Envctl, project: Path
) -> None:
    (project / "data" / "x.csv").unlink()
    done = enter(remote, project, "test -e data/x.csv && echo present || echo gone")
    assert done.stdout == "gone\n", done.stderr
    (project / "scratch.txt").write_text("tmp\n")
    assert enter(remote, project, "rm scratch.txt").returncode == 0
    assert not (project / "scratch.txt").exists()


def test_a_file_changed_on_both_sides_is_named_and_the_host_copy_kept(
    remote: Envctl, project: Path, remote_docker_host: str
) -> None:
    notes = project / "notes.md"
    notes.write_text("v1\n")
    assert enter(remote, project, "true").returncode == 0
    started = project / "started"
    argv = [sys.executable, "-m", "cli.main", "enter", str(project), "--", "sh", "-c",
            "echo theirs > notes.md; echo > started; sleep 3"]  # fmt: skip
    job = subprocess.Popen(
        argv, env=remote.env, cwd=remote.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    container = warm_container(remote_docker_host, "dflt")
    deadline = time.monotonic() + 60
    while remote_docker(remote_docker_host, "exec", container, "test", "-e", "started").returncode:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.1)
    notes.write_text("mine\n")  # while the command runs, after it wrote its own
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    assert started.exists()  # brought back with the rest
    assert notes.read_text() == "mine\n"
    assert (project / "notes.md.envd-remote").read_text() == "theirs\n"
    assert "conflict: notes.md" in err and "notes.md.envd-remote" in err
    # The engine now holds the host's copy; the conflict copy never travels.
    check = enter(remote, project, "cat notes.md; ls notes.md.envd-remote 2>/dev/null; true")
    assert check.stdout == "mine\n" and "conflict" not in check.stderr


def test_a_shell_session_syncs_back_and_large_files_show_progress(
    remote: Envctl, project: Path
) -> None:
    # No command: a login shell reading its commands from stdin (no terminal here).
    shell = remote("enter", str(project), input="echo from-shell > shell.txt\n", timeout=300)
    assert shell.returncode == 0, shell.stderr
    assert (project / "shell.txt").read_text() == "from-shell\n"
    (project / "weights.bin").write_bytes(os.urandom(24 << 20))
    done = enter(remote, project, "wc -c < weights.bin")
    assert done.returncode == 0 and done.stdout.strip() == str(24 << 20), done.stderr
    assert "[sync] sending weights.bin" in done.stderr
    (project / "weights.bin").unlink()


def count_calls(files: EngineFiles) -> list[str]:
    """The names of the gateway's methods called from now on (each reaches the engine)."""
    calls: list[str] = []

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return method(*args, **kwargs)

        return call

    for name in ("ensure_volume", "listing", "hashes", "read", "write", "remove", "own_workdir"):
        setattr(files, name, counted(name, getattr(files, name)))
    return calls


def test_an_unchanged_thousand_file_project_costs_no_engine_call_before_a_command(
    remote: Envctl,
    project: Path,
    remote_docker_host: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What 1,000 unchanged files cost an enter: nothing on the engine before the command (one
    lstat per file here), one listing after it, nothing moved. (How long that takes is the
    bench's "remote enter, 1,000 files" case, not a test's: a timed assertion fails on a busy
    machine.)"""
    many = remote.cwd / "many"
    many.mkdir()
    for name in ("envd.yaml", "envd.lock"):
        (many / name).write_bytes((project / name).read_bytes())
    text = (many / "envd.yaml").read_text().replace("name: dflt", "name: many")
    (many / "envd.yaml").write_text(text)
    for i in range(1000):
        folder = many / f"pkg{i // 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"m{i}.py").write_text(f"X = {i}\n")
    first = enter(remote, many, "ls pkg9 | wc -l")
    assert first.returncode == 0 and first.stdout.strip() == "100", first.stderr

    # The sync itself, as the daemon runs it (the real gateway, that engine), before and
    # after a command.
    monkeypatch.setenv("DOCKER_HOST", remote_docker_host)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    files = EngineFiles(Engine())
    sync = ProjectSync(files, tmp_path / "sync", remote.namespace, "measure", remote_docker_host)
    container = warm_container(remote_docker_host, "many")
    sync.volume("many")
    uid, gid = os.getuid(), os.getgid()
    sync.up("many", str(many), container, uid, gid)  # a state of its own: compares everything
    sync.down("many", str(many), container, uid, gid)
    calls = count_calls(files)
    for _ in range(3):
        calls.clear()
        up = sync.up("many", str(many), container, uid, gid)
        assert (up.sent, up.received, calls) == (0, 0, [])  # no engine call before a command
        down = sync.down("many", str(many), container, uid, gid)
        assert (down.sent, down.received) == (0, 0)
        assert calls.count("listing") == 1  # one find after it; nothing read, written, removed
        assert not {"read", "write", "remove", "own_workdir"} & set(calls), calls
    files.close()  # its lister
    assert enter(remote, many, "test -f pkg9/m999.py").returncode == 0


def test_a_partial_listing_deletes_nothing_here(
    remote: Envctl, project: Path, remote_docker_host: str
) -> None:
    """find failing part way (here a replaced find that leaves kept/ out and exits 1, as a
    folder vanishing mid-walk does) must not read as "deleted on the engine"."""
    (project / "kept").mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (project / "kept" / name).write_text(f"{name}\n")
    assert enter(remote, project, "true").returncode == 0
    container = warm_container(remote_docker_host, "dflt")
    lying = (
        'real=$(command -v find) && mv "$real" "$real.real" && '
        "printf '#!/bin/sh\\nshift\\n%s.real . -path ./kept -prune -o \"$@\"\\nexit 1\\n' "
        '"$real" > "$real" && chmod 755 "$real"'
    )
    honest = 'real=$(command -v find.real) && mv "$real" "${real%.real}"'
    done_setup = remote_docker(remote_docker_host, "exec", "-u", "0", container, "sh", "-c", lying)
    assert done_setup.returncode == 0, done_setup.stderr
    try:
        done = enter(remote, project, "echo made > made.txt")
    finally:
        undo = remote_docker(remote_docker_host, "exec", "-u", "0", container, "sh", "-c", honest)
        assert undo.returncode == 0, undo.stderr
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (project / "kept").iterdir()) == ["a.txt", "b.txt", "c.txt"]
    assert (project / "made.txt").read_text() == "made\n"  # pulls still proceed
    assert "incomplete" in done.stderr and "nothing was deleted here" in done.stderr
    # With find whole again, a deletion there is one here.
    assert enter(remote, project, "rm kept/a.txt").returncode == 0
    assert sorted(p.name for p in (project / "kept").iterdir()) == ["b.txt", "c.txt"]
