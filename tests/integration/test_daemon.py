"""The daemon through the real envctl: autostart, socket security, one instance, shutdown."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Envctl, copy_template

pytestmark = pytest.mark.integration


def test_status_autostarts_daemon_and_shows_engine(envctl: Envctl, engine: None) -> None:
    out = envctl.ok("daemon", "status")
    assert "engine:   Docker" in out
    data = json.loads(envctl.ok("--json", "daemon", "status"))
    assert data["engine"]["reachable"] is True
    assert data["engine"]["version"]
    assert data["socket_path"] == str(envctl.home / "envd.sock")


def test_socket_is_private(envctl: Envctl) -> None:
    envctl.ok("daemon", "start")
    mode = stat.S_IMODE(os.stat(envctl.home / "envd.sock").st_mode)
    assert mode == 0o600
    private = envctl.home / "run"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_client_of_another_uid_is_refused(envctl: Envctl) -> None:
    import tempfile

    open_dir = Path(tempfile.mkdtemp(prefix="envd-uid-test-"))
    sock = open_dir / "envd.sock"
    envctl.env["ENVD_SOCKET"] = str(sock)
    envctl.ok("daemon", "start")
    # Open the socket and its folders to everyone, so the kernel lets `nobody` connect:
    # SO_PEERCRED must still refuse it, which proves the check itself and not the file mode.
    os.chmod(open_dir, 0o755)
    os.chmod(sock, 0o777)
    nobody = pwd.getpwnam("nobody")
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n')\n"
        "    data = s.recv(100)\n"
        "except (BrokenPipeError, ConnectionResetError):\n"  # refused before or after the send
        "    data = b''\n"
        "print('closed' if data == b'' else 'answered')\n"
    )

    def as_nobody() -> None:
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    # The venv's interpreter lives under /root; the system one is readable by nobody.
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    out = subprocess.run(
        [python, "-c", script, str(sock)],
        preexec_fn=as_nobody,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout.strip() == "closed", out.stderr
    log = (envctl.home / "logs" / "envd.log").read_text()
    assert f"refused a connection from uid {nobody.pw_uid}" in log
    envctl.ok("daemon", "stop")
    shutil.rmtree(open_dir, ignore_errors=True)


def test_second_daemon_refuses_to_start(envctl: Envctl) -> None:
    envctl.ok("daemon", "start")
    proc = subprocess.run(
        [sys.executable, "-m", "envd.daemon.serve", "serve"],
        env=envctl.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "another envd is already running" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stale_socket_file_is_replaced(envctl: Envctl) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(envctl.home / "envd.sock"))
    stale.close()  # the file stays, nobody listens
    out = envctl.ok("daemon", "start")
    assert "envd is running" in out


def test_stop_and_logs(envctl: Envctl) -> None:
    envctl.ok("daemon", "start")
    assert "envd stopped" in envctl.ok("daemon", "stop")
    assert not (envctl.home / "envd.sock").exists()
    assert "serving on" in envctl.ok("daemon", "logs")
    assert "not running" in envctl.ok("daemon", "stop")


def test_sigterm_shuts_down_cleanly(envctl: Envctl) -> None:
    envctl.ok("daemon", "start")
    pid = int((envctl.home / "envd.pid").read_text())
    os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while (envctl.home / "envd.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (envctl.home / "envd.sock").exists()


def test_daemon_start_failure_names_the_log(envctl: Envctl, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = dict(envctl.env, ENVD_SOCKET=str(blocker / "envd.sock"))
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "daemon", "status"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 11
    assert "envd.log" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_command_for_another_engine_is_refused_not_run_on_this_one(envctl: Envctl) -> None:
    """The daemon started without DOCKER_HOST serves the local engine: a command whose
    environment names a remote one must not quietly run here."""
    proj = copy_template("default", envctl.cwd / "elsewhere")
    envctl.ok("add", str(proj))
    other = {**envctl.env, "DOCKER_HOST": "tcp://127.0.0.1:9"}
    for argv in (["ls"], ["enter", str(proj), "--", "true"], ["build", str(proj)]):
        proc = subprocess.run(
            [sys.executable, "-m", "cli.main", *argv], env=other, cwd=envctl.cwd,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 11, (argv, proc.stderr)
        assert "DOCKER_HOST=tcp://127.0.0.1:9" in proc.stderr, proc.stderr
        assert "envctl daemon stop" in proc.stderr and "Traceback" not in proc.stderr
    # status and stop still reach the daemon in the way; the next command starts one for it
    status = subprocess.run(
        [sys.executable, "-m", "cli.main", "daemon", "status"], env=other, cwd=envctl.cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    envctl.env = other
    envctl.ok("daemon", "stop")
    assert "elsewhere" in envctl.ok("ls")  # a daemon for that engine, same projects
    proc = envctl("build", str(proj))  # and it is that engine it asks
    assert proc.returncode == 12 and "tcp://127.0.0.1:9" in proc.stderr, proc.stderr
