"""envctl enter on the real engine: exit codes, pipes, users, reuse, swap, stop, restart."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template
from tests.integration.events import EventStream

pytestmark = pytest.mark.integration


def warm(envctl: Envctl) -> dict[str, str]:
    """project -> container id of each running warm container."""
    return {
        c["project"]: c["container_id"]
        for c in json.loads(envctl.ok("--json", "ps"))["containers"]
        if c["status"] == "running"
    }


def containers(envctl: Envctl) -> list[dict[str, str]]:
    return list(json.loads(envctl.ok("--json", "ps"))["containers"])


def inspect(container: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    ).stdout
    return dict(json.loads(out)[0])


def exists(container: str) -> bool:
    return subprocess.run(["docker", "inspect", container], capture_output=True).returncode == 0


def new_project(envctl: Envctl, name: str, extra: str = "") -> Path:
    """A copy of the default template named `name`; its lock is shared with the default one."""
    path = copy_template("default", envctl.cwd / name)
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + f"name: {name}\n" + extra)
    lock = envctl.cwd / "default" / "envd.lock"
    if lock.exists() and not extra:
        shutil.copy(lock, path / "envd.lock")
    return path


def popen_envctl(envctl: Envctl, *args: str, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "cli.main", *args],
        env=envctl.env,
        cwd=envctl.cwd,
        text=True,
        **kw,
    )


# ---------------------------------------------------------------- the command's own I/O


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_codes_pass_through(shared: Envctl, default_project: Path, code: int) -> None:
    proc = shared("enter", str(default_project), "--", "sh", "-c", f"exit {code}")
    assert proc.returncode == code, proc.stderr


def test_python_runs_with_the_spec_env(shared: Envctl, default_project: Path) -> None:
    out = shared.ok(
        "enter",
        str(default_project),
        "--",
        "python",
        "-c",
        "import os, sys, numpy; print(sys.version_info[:2], os.environ['PYTHONHASHSEED'],"
        " os.getcwd(), sys.prefix)",
    )
    assert out.strip() == "(3, 11) 0 /workspace /opt/venv"


def test_pipes_both_ways(shared: Envctl, default_project: Path) -> None:
    assert shared.ok("enter", str(default_project), "--", "cat", input="hello\n") == "hello\n"
    out = shared.ok("enter", str(default_project), "--", "sh", "-c", "wc -l", input="a\nb\nc\n")
    assert out.strip() == "3"
    err = shared("enter", str(default_project), "--", "sh", "-c", "echo oops >&2; exit 2")
    assert err.returncode == 2 and err.stderr == "oops\n" and err.stdout == ""


def test_a_shell_reads_commands_from_a_pipe(shared: Envctl, default_project: Path) -> None:
    proc = shared("enter", str(default_project), input="echo in-$ENVD_PROJECT; exit 5\n")
    assert proc.returncode == 5 and proc.stdout == "in-dflt\n", proc.stderr


def test_cwd_inside_the_project_is_kept(shared: Envctl, default_project: Path) -> None:
    sub = default_project / "src"
    sub.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "enter", "dflt", "--", "pwd"],
        env=shared.env,
        cwd=sub,
        capture_output=True,
        text=True,
    )
    assert proc.stdout == "/workspace/src\n", proc.stderr
    sub.rmdir()


def test_workspace_files_belong_to_the_caller(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "touch", "made-inside")
    made = default_project / "made-inside"
    assert made.stat().st_uid == os.getuid()
    made.unlink()


def test_files_belong_to_a_non_root_caller(shared: Envctl, default_project: Path) -> None:
    """The Enter call as uid 4321 (what envctl sends for that user), then envctl's docker exec.

    envctl itself cannot run as another uid here: the daemon refuses peers of another uid, and
    a second daemon would need its own build.
    """
    mine = default_project / "u4321"
    mine.mkdir(exist_ok=True)
    os.chown(mine, 4321, 4321)
    code = (
        "import sys, json\n"
        "from cli.context import AppContext\n"
        "from cli.entering import exec_argv\n"
        "from envd.v1 import envd_pb2 as pb\n"
        f"req = pb.EnterRequest(project=pb.ProjectRef(ref={str(default_project)!r}),"
        " command=sys.argv[1:], uid=4321, gid=4321, user_name='ada',"
        f" cwd={str(mine)!r})\n"
        "t = [e.target for e in AppContext().client().enter(req)"
        " if e.HasField('target')][0]\n"
        "print(json.dumps({'argv': exec_argv(t, False), 'env': dict(t.env), 'run': t.run_id}))\n"
    )

    def as_ada(*command: str) -> str:
        target = json.loads(
            subprocess.run(
                [sys.executable, "-c", code, *command],
                env=shared.env,
                cwd=shared.cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert target["env"]["HOME"] == "/home/ada" and "-u" in target["argv"]
        assert target["argv"][target["argv"].index("-u") + 1] == "4321:4321"
        assert target["argv"][target["argv"].index("-w") + 1] == "/workspace/u4321"
        return subprocess.run(
            target["argv"], capture_output=True, text=True, check=True
        ).stdout.strip()

    as_ada("touch", "by-4321")
    made = mine / "by-4321"
    assert made.stat().st_uid == 4321
    assert as_ada("sh", "-c", "cd ~ && touch ok && id -un && echo $HOME") == "ada\n/home/ada"
    made.unlink()
    mine.rmdir()


# ---------------------------------------------------------------- signals


def test_sigterm_reaches_the_command(shared: Envctl, default_project: Path) -> None:
    proc = popen_envctl(
        shared,
        "enter",
        str(default_project),
        "--",
        "sh",
        "-c",
        "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"  # the trap is set
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "got-term" in out and proc.returncode == 7


@pytest.mark.parametrize("stdin_tty", [False, True])
def test_ctrl_c_in_a_pipeline_ends_the_command(
    shared: Envctl, default_project: Path, stdin_tty: bool
) -> None:
    """Ctrl-C signals the terminal's whole foreground group: `envctl enter p -- CMD | tee log`.

    The command gets SIGINT once, its output after the signal still arrives, and its status
    is envctl's.
    """
    leader, follower = pty.openpty()
    proc = popen_envctl(
        shared,
        "enter",
        str(default_project),
        "--",
        "sh",
        "-c",
        "trap 'echo got-int; sleep 0.5; echo after; exit 9' INT; echo ready;"
        " while true; do sleep 0.1; done",
        stdin=follower if stdin_tty else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own group, as a terminal's foreground job is
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    assert out == "got-int\nafter\n" and proc.returncode == 9, err


# ---------------------------------------------------------------- warm containers


def test_the_warm_container_is_labelled_and_mounted(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    info = inspect(warm(shared)["dflt"])
    labels = info["Config"]["Labels"]
    assert labels["envd.role"] == "warm" and labels["envd.project"] == "dflt"
    assert (
        labels["envd.image"].startswith("envd-")
        and "/dflt:" in labels["envd.image"]
        and labels["envd.owner"]
    )
    assert info["Name"] == "/envd-dflt-" + info["Image"].removeprefix("sha256:")[:12]
    assert info["Config"]["Cmd"] == ["sleep", "infinity"] and info["HostConfig"]["Init"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/workspace"]["Source"] == str(default_project) and mounts["/workspace"]["RW"]
    # the agent (read-only, from the envd package) and its private socket folder; nothing else
    assert set(mounts) == {"/workspace", "/run/envd/agent.py", "/run/envd/sock"}
    assert not mounts["/run/envd/agent.py"]["RW"]
    assert mounts["/run/envd/sock"]["Source"].startswith(str(shared.home / "run" / "agents"))


def test_second_enter_reuses_and_swap_comes_back(shared: Envctl, default_project: Path) -> None:
    other = new_project(shared, "other")
    shared.ok("enter", str(default_project), "--", "true")
    first = warm(shared)["dflt"]
    shared.ok("enter", str(other), "--", "true")
    second = warm(shared)["other"]
    for _ in range(2):
        shared.ok("enter", str(default_project), "--", "true")
        shared.ok("enter", str(other), "--", "true")
    assert warm(shared) == {"dflt": first, "other": second}
    table = shared.ok("ps")
    assert table.splitlines()[0].split() == [
        "PROJECT",
        "CONTAINER",
        "IMAGE",
        "SINCE",
        "LAST",
        "USED",
        "STATUS",
    ]
    assert f"dflt     {first[:12]}" in table
    shared.ok("stop", "other")


def test_ps_on_the_enter_socket_prints_what_ps_over_grpc_prints(
    shared: Envctl, default_project: Path
) -> None:
    """`envctl ps` asks the enter socket (no grpc); ENVD_ENTER_FAST=0 asks over gRPC."""
    shared.ok("enter", str(default_project), "--", "true")
    over_grpc = Envctl(env={**shared.env, "ENVD_ENTER_FAST": "0"}, home=shared.home, cwd=shared.cwd)
    fast, slow = shared.ok("--json", "ps"), over_grpc.ok("--json", "ps")
    assert fast == slow
    assert "dflt" in [c["project"] for c in json.loads(fast)["containers"]]

    def cells(table: str) -> list[list[str]]:  # the seconds may tick between the two calls
        return [re.sub(r"\b\d+[smhd] ago\b", "T ago", line).split() for line in table.splitlines()]

    assert cells(shared.ok("ps")) == cells(over_grpc.ok("ps"))


def test_spec_ports_are_published_on_localhost(shared: Envctl) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = new_project(shared, "web")
    shared.ok("enter", str(web), "--", "true")
    (web / "envd.yaml").write_text((web / "envd.yaml").read_text() + f"ports: [{port}]\n")
    # ports are not part of the image: the same image, a new container with the port
    server = popen_envctl(
        shared,
        "enter",
        str(web),
        "--",
        "python",
        "-c",
        f"import socket; s = socket.socket(); s.bind(('0.0.0.0', {port})); s.listen();"
        " print('up', flush=True); c, _ = s.accept(); c.sendall(b'pong'); c.close()",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdout.readline() == "up\n"
    bindings = inspect(warm(shared)["web"])["HostConfig"]["PortBindings"]
    assert bindings == {f"{port}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        assert client.recv(4) == b"pong"
    server.communicate(timeout=30)
    assert server.returncode == 0
    clash = new_project(shared, "web2", extra=f"ports: [{port}]\n")
    shutil.copy(web / "envd.lock", clash / "envd.lock")
    taken = shared("enter", str(clash), "--", "true")
    assert taken.returncode == 10 and "hint: is a port of envd.yaml" in taken.stderr, taken.stderr
    assert "web2" not in warm(shared)
    shared.ok("stop", "web")


def test_stop_and_idle_expiry(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    container = warm(shared)["dflt"]
    assert shared.ok("stop", "dflt") == f"stopped dflt ({container[:12]})\n"
    assert "dflt" not in warm(shared) and not exists(container)
    assert shared.ok("stop", "dflt") == "nothing was running\n"
    assert shared("stop", "no-such-project").returncode == 4
    assert shared("stop").returncode == 2
    shared.ok("config", "idle_timeout", "2")
    try:
        with EventStream(shared) as events:
            _idle_expiry(shared, default_project, events)
    finally:
        shared.ok("config", "idle_timeout", "1800")


def _idle_expiry(shared: Envctl, project: Path, events: EventStream) -> None:
    # a command longer than the timeout keeps its container; it runs until the test says so
    running = popen_envctl(
        shared, "enter", str(project), "--", "sh", "-c",
        "echo started; while [ ! -e go ]; do sleep 0.1; done; echo finished",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert running.stdout is not None and running.stdout.readline() == "started\n"
        container = warm(shared)["dflt"]
        time.sleep(3)  # past the idle timeout (the reaper looks every second), still running
        assert warm(shared).get("dflt") == container
    finally:
        (project / "go").touch()
    out, _ = running.communicate(timeout=60)
    (project / "go").unlink()
    assert out == "finished\n" and running.returncode == 0
    stopped = events.wait("container.stopped", lambda e: e["project"] == "dflt")
    assert stopped["fields"]["reason"].startswith("idle for ")
    assert "dflt" not in warm(shared) and not exists(container)


def test_stop_all(shared: Envctl, default_project: Path) -> None:
    other = new_project(shared, "other2")
    shared.ok("enter", str(default_project), "--", "true")
    shared.ok("enter", str(other), "--", "true")
    ids = warm(shared)
    out = shared.ok("stop", "--all")
    assert {line.split()[1] for line in out.splitlines()} == {"dflt", "other2"}
    assert warm(shared) == {} and not any(exists(c) for c in ids.values())


def test_daemon_restart_keeps_the_warm_container(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    before = warm(shared)["dflt"]
    shared.ok("daemon", "stop")
    assert shared.ok("enter", str(default_project), "--", "echo", "back") == "back\n"
    assert warm(shared)["dflt"] == before


def test_a_killed_container_is_replaced(shared: Envctl, default_project: Path) -> None:
    shared.ok("enter", str(default_project), "--", "true")
    old = warm(shared)["dflt"]
    killed = subprocess.run(["docker", "kill", old], capture_output=True, text=True)
    assert killed.returncode == 0, killed.stderr
    assert shared.ok("enter", str(default_project), "--", "echo", "ok") == "ok\n"
    assert warm(shared)["dflt"] != old and not exists(old)


def test_a_rebuild_waits_for_running_commands(shared: Envctl) -> None:
    """A new image takes over at the next enter; a command in the old container runs on."""
    proj = new_project(shared, "rebuilt")
    shared.ok("enter", str(proj), "--", "true")
    old = warm(shared)["rebuilt"]
    long = popen_envctl(
        shared,
        "enter",
        str(proj),
        "--",
        "sh",
        "-c",
        # long enough to outlast the rebuild below even on a loaded machine; the file it
        # waits for ends it early once the checks are done
        "echo started; for i in $(seq 120); do [ -e go ] && break; sleep 0.5; done;"
        " echo finished; exit 3",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        assert long.stdout is not None and long.stdout.readline() == "started\n"
        (proj / "envd.yaml").write_text(
            (proj / "envd.yaml").read_text() + 'setup: ["echo rebuilt > /etc/envd-marker"]\n'
        )
        shared.ok("lock", str(proj))
        assert shared.ok("enter", str(proj), "--", "cat", "/etc/envd-marker") == "rebuilt\n"
        new = warm(shared)["rebuilt"]
        assert new != old and exists(old)
        assert {c["container_id"]: c["status"] for c in containers(shared)}[old] == "retiring"
    finally:
        (proj / "go").touch()
    out, _ = long.communicate(timeout=90)
    assert out == "finished\n" and long.returncode == 3
    with EventStream(shared) as events:
        shared.ok("config", "idle_timeout", "10")  # the reaper now looks every 5 s
        try:
            shared.ok("enter", str(proj), "--", "true")  # keeps the new one in use
            events.wait(
                "container.stopped",
                lambda e: e["project"] == "rebuilt" and e["fields"]["reason"] == "replaced",
            )
            assert not exists(old) and warm(shared)["rebuilt"] == new
        finally:
            shared.ok("config", "idle_timeout", "1800")
    shared.ok("stop", "rebuilt")


def test_a_failed_build_leaves_the_previous_image_enterable(shared: Envctl) -> None:
    proj = new_project(shared, "breaks")
    shared.ok("enter", str(proj), "--", "true")
    container = warm(shared)["breaks"]
    good_spec, good_lock = (proj / "envd.yaml").read_text(), (proj / "envd.lock").read_text()
    (proj / "envd.yaml").write_text(good_spec + 'setup: ["echo broken; exit 3"]\n')
    shared.ok("lock", str(proj))
    failed = shared("enter", str(proj), "--", "true")
    assert failed.returncode == 6, failed.stderr
    assert "build step" in failed.stderr and "Traceback" not in failed.stderr
    assert "hint: the previous image envd-" in failed.stderr and "/breaks:" in failed.stderr
    (proj / "envd.yaml").write_text(good_spec)
    (proj / "envd.lock").write_text(good_lock)
    again = shared("enter", str(proj), "--", "echo", "ok")
    assert again.stdout == "ok\n" and again.stderr == ""  # no build, the same container
    assert warm(shared)["breaks"] == container
    shared.ok("stop", "breaks")


# ---------------------------------------------------------------- runs


def test_runs_are_recorded(shared: Envctl, default_project: Path) -> None:
    shared("enter", str(default_project), "--", "sh", "-c", "exit 17")
    runs = json.loads(shared.ok("--json", "runs", "--project", "dflt"))["runs"]
    run = runs[0]
    assert run["command"] == ["sh", "-c", "exit 17"] and run["exit_code"] == 17
    assert run["finished"] and run["ended_at"] >= run["started_at"] > 0
    assert run["image"].startswith("envd-") and "/dflt:" in run["image"] and len(run["id"]) == 12
    assert run["environment_hash"].startswith("sha256:") and run["host_hash"]
    assert run["git_commit"] == "" and not run["git_dirty"]  # not a git repository
    shown = json.loads(shared.ok("--json", "runs", "show", run["id"]))
    assert shown == run
    assert shared("runs", "show", "nope").returncode == 4


def test_runs_record_the_git_commit(shared: Envctl) -> None:
    proj = new_project(shared, "versioned")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(proj)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "envd.yaml", "envd.lock"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    shared.ok("enter", str(proj), "--", "true")
    (proj / "envd.yaml").write_text((proj / "envd.yaml").read_text() + "# a comment\n")
    shared.ok("enter", str(proj), "--", "true")
    dirty, clean = json.loads(shared.ok("--json", "runs", "--project", "versioned"))["runs"][:2]
    assert clean["git_commit"] == head and not clean["git_dirty"]
    assert dirty["git_commit"] == head and dirty["git_dirty"]
    shared.ok("stop", "versioned")


def test_a_project_folder_cloned_again_is_what_the_next_enter_sees(
    shared: Envctl, default_project: Path
) -> None:
    """`rm -rf P && git clone ... P` (or `mv P P.old` and a new P) while P's container is
    warm: that container binds the old folder (deleted: empty; moved: the old files), so the
    next enter starts one that binds the folder there now, with both paths."""
    shared.ok("enter", str(default_project), "--", "true")  # warm, bound to this folder
    old = default_project.with_name(default_project.name + ".old")
    for replace_folder in ("moved", "deleted"):
        shutil.rmtree(old, ignore_errors=True)
        default_project.rename(old)
        shutil.copytree(old, default_project)
        if replace_folder == "deleted":
            shutil.rmtree(old)
        (default_project / "cloned.txt").write_text(f"{replace_folder}\n")
        seen = shared.ok("enter", str(default_project), "--", "cat", "cloned.txt")
        assert seen == f"{replace_folder}\n"
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- errors


def test_unknown_project_is_a_clear_error(shared: Envctl) -> None:
    proc = shared("enter", "no-such-project", "--", "true")
    assert proc.returncode == 4
    assert "no project named `no-such-project`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_invalid_spec_is_a_clear_error(shared: Envctl, project) -> None:  # type: ignore[no-untyped-def]
    bad = project("bad", "version: 1\nbase: {debian: bookworm}\npakages: [numpy]\n")
    proc = shared("enter", str(bad), "--", "true")
    assert proc.returncode == 1 and "pakages" in proc.stderr and "packages" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 3


def test_engine_down_is_a_clear_error(envctl: Envctl) -> None:
    """A daemon whose engine does not answer (started here with a DOCKER_HOST that is gone)."""
    proj = copy_template("default", envctl.cwd / "nodocker")
    envctl.env["DOCKER_HOST"] = f"unix://{envctl.cwd}/no-engine.sock"
    proc = envctl("enter", str(proj), "--", "true")
    assert proc.returncode == 12, proc.stderr
    where = envctl.env["DOCKER_HOST"]
    said = f"the container engine at {where} (DOCKER_HOST) does not answer"
    assert said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
