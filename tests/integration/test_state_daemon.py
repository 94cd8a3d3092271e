"""Unfriendly homes and sockets, through the real envctl and daemon: private state, a
read-only or full $ENVD_HOME, a socket path that is not envd's, and a stop that waits."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")


def daemon_pid(envctl: Envctl) -> int:
    return int(json.loads(envctl.ok("--json", "daemon", "status"))["pid"])


def clear_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The exit code, the words, a hint, and no traceback or internal error."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)
    assert "hint:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "internal error" not in proc.stderr


@contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def use_home(envctl: Envctl, home: Path) -> None:
    envctl.home = home
    envctl.env["ENVD_HOME"] = str(home)
    envctl.env["ENVD_SOCKET"] = str(home / "envd.sock")


# ------------------------------------------------------------ private state


def test_state_is_private_and_a_loose_home_is_tightened(envctl: Envctl, engine: None) -> None:
    home = envctl.home
    home.chmod(0o755)
    (home / "config.yaml").write_text("idle_timeout: 900\n")
    (home / "config.yaml").chmod(0o644)
    (home / "logs").mkdir()
    (home / "logs" / "envd.log").write_text("an older daemon's line\n")
    (home / "logs" / "envd.log").chmod(0o644)
    envctl.env.pop("ENVD_CACHE")  # the cache in the home, as for a user
    proj = envctl.cwd / "proj"
    proj.mkdir()
    (proj / "envd.yaml").write_text("version: 1\nname: priv\nbase: {debian: bookworm}\n")
    envctl.ok("add", str(proj))  # starts the daemon, writes the database
    envctl.ok("config", "idle_timeout", "600")  # config.yaml rewritten
    assert mode(home) == 0o700
    for folder in ("logs", "run", "cache", "cache/debian", "cache/layers"):
        assert mode(home / folder) == 0o700, folder
    names = ["envd.db", "envd.db-wal", "envd.db-shm", "config.yaml", "envd.pid", "daemon.lock"]
    names += ["logs/envd.log", "logs/daemon.out"]
    for name in names:
        assert (home / name).exists(), name
        assert mode(home / name) == 0o600, (name, oct(mode(home / name)))
    assert mode(home / "envd.sock") == 0o600
    # every plain file anywhere in the home, but the cache's contents, is 0600
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink() and "cache" not in path.parts:
            assert mode(path) == 0o600, path
    assert "idle_timeout: 600" in (home / "config.yaml").read_text()


def test_a_new_config_file_is_private_too(envctl: Envctl, engine: None) -> None:
    assert not (envctl.home / "config.yaml").exists()
    envctl.ok("config", "idle_timeout", "120")
    assert mode(envctl.home / "config.yaml") == 0o600
    assert "idle_timeout: 120" in (envctl.home / "config.yaml").read_text()
    assert "120" in envctl.ok("config", "idle_timeout")


def test_a_stale_scratch_folder_is_emptied_at_start(envctl: Envctl, engine: None) -> None:
    left = envctl.home / "tmp" / "envd-build-abc123"
    left.mkdir(parents=True)
    (left / "requirements.txt").write_text("numpy==1.26.4\n")
    envctl.ok("daemon", "start")
    assert (envctl.home / "tmp").is_dir() and list((envctl.home / "tmp").iterdir()) == []
    assert mode(envctl.home / "tmp") == 0o700


# ------------------------------------------------------------ read-only and full homes


def test_a_read_only_home_is_a_clear_error_and_remounting_fixes_it(
    envctl: Envctl, engine: None
) -> None:
    with tmpfs(envctl.cwd / "ro-home", "size=4m,mode=0700") as home:
        remount(home, "ro")
        use_home(envctl, home)
        proc = envctl("ls")
        clear_error(proc, 11, "read-only file system", "remount it read-write", "ENVD_HOME")
        remount(home, "rw")  # the fix the hint gives
        envctl.ok("ls")
        envctl.ok("daemon", "stop")


def test_a_home_gone_read_only_after_use(envctl: Envctl, engine: None) -> None:
    """State written, the daemon stopped, the file system then read-only: envctl and a
    directly started `envd serve` both say so, with exit 11."""
    with tmpfs(envctl.cwd / "used-home", "size=4m,mode=0700") as home:
        use_home(envctl, home)
        proj = envctl.cwd / "p"
        proj.mkdir()
        (proj / "envd.yaml").write_text("version: 1\nname: rohome\nbase: {debian: bookworm}\n")
        envctl.ok("add", str(proj))
        envctl.ok("daemon", "stop")
        remount(home, "ro")
        clear_error(envctl("ls"), 11, "read-only file system")
        serve = subprocess.run(
            [sys.executable, "-m", "envd.daemon.serve", "serve"],
            env=envctl.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert serve.returncode == 11, serve.stderr
        assert "read-only file system" in serve.stderr and "Traceback" not in serve.stderr
        remount(home, "rw")
        assert "rohome" in envctl.ok("ls")  # nothing was lost
        envctl.ok("daemon", "stop")


def fill(folder: Path) -> Path:
    """Write a file until the file system is full, to the last byte; returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_a_clear_error_and_nothing_is_lost(envctl: Envctl, engine: None) -> None:
    with tmpfs(envctl.cwd / "full-home", "size=3m,mode=0700") as home:
        use_home(envctl, home)
        first, second = envctl.cwd / "first", envctl.cwd / "second"
        for path, name in ((first, "fullone"), (second, "fulltwo")):
            path.mkdir()
            (path / "envd.yaml").write_text(
                f"version: 1\nname: {name}\nbase: {{debian: bookworm}}\n"
            )
        envctl.ok("add", str(first))
        pid = daemon_pid(envctl)
        filler = fill(home)
        proc = envctl("add", str(second))
        clear_error(proc, 11, "no space left", "df -h")
        proc = envctl("config", "idle_timeout", "60")
        assert proc.returncode == 1 and "No space left" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        filler.unlink()  # the fix the hint gives: free some space
        envctl.ok("add", str(second))
        listed = envctl.ok("ls")
        assert "fullone" in listed and "fulltwo" in listed
        assert daemon_pid(envctl) == pid  # the daemon lived through it
        envctl.ok("daemon", "stop")


# ------------------------------------------------------------ socket paths


def test_a_socket_path_that_is_a_file_is_refused_and_kept(envctl: Envctl, engine: None) -> None:
    notes = envctl.cwd / "notes.txt"
    notes.write_text("not a socket\n")
    envctl.env["ENVD_SOCKET"] = str(notes)
    clear_error(envctl("ls"), 11, "is a file, not envd's socket", "ENVD_SOCKET")
    assert notes.read_text() == "not a socket\n"
    assert not (envctl.home / "envd.pid").exists()  # no daemon started
    # the hint's fix: a path of one's own
    envctl.env["ENVD_SOCKET"] = str(envctl.home / "envd.sock")
    envctl.ok("ls")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_another_users_socket_is_refused_and_left_alone(envctl: Envctl, engine: None) -> None:
    theirs = envctl.cwd / "theirs.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(theirs))
    listener.listen(1)  # someone else's live daemon
    try:
        os.chown(theirs, 4242, 4242)
        envctl.env["ENVD_SOCKET"] = str(theirs)
        clear_error(envctl("ls"), 11, "belongs to uid 4242", "ENVD_SOCKET")
        clear_error(envctl("daemon", "stop"), 11, "belongs to uid 4242")
        listener.close()  # now a stale one: still not ours to replace
        clear_error(envctl("daemon", "start"), 11, "belongs to uid 4242")
        assert stat.S_ISSOCK(theirs.lstat().st_mode) and theirs.lstat().st_uid == 4242
    finally:
        listener.close()


# ------------------------------------------------------------ daemon stop


def test_stop_says_stopped_only_once_the_process_is_gone(envctl: Envctl, engine: None) -> None:
    pid = daemon_pid(envctl)
    out = envctl.ok("daemon", "stop")
    assert out.strip().endswith("envd stopped")
    assert not alive(pid)
    assert envctl.ok("daemon", "stop").strip() == "envd is not running"


def test_a_hung_daemon_is_killed_and_said_so(envctl: Envctl, engine: None) -> None:
    pid = daemon_pid(envctl)
    os.kill(pid, signal.SIGSTOP)  # it accepts connections (the kernel does) but never answers
    try:
        start = time.monotonic()
        proc = envctl("daemon", "stop", timeout=60)
        took = time.monotonic() - start
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stderr
    assert "does not answer" in proc.stdout and "SIGKILL" in proc.stdout, proc.stdout
    assert not alive(pid)
    assert took < 30
    envctl.ok("daemon", "start")  # a new one starts over the stale socket
