"""$ENVD_HOME is private, and a home or socket path envd cannot use is a clear StateError."""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.client import check_socket, connect
from cli.commands.daemon import _alive
from envd.daemon.serve import (
    PrivateRotatingFileHandler,
    _prepare_socket,
    clean_tmp,
    prepare_home,
)
from envd.errors import EXIT_DAEMON, StateError
from envd.paths import resolve_paths, socket_problem, unusable_path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def paths_in(home: Path, cache: Path | None = None):  # type: ignore[no-untyped-def]
    env = {"ENVD_HOME": str(home), "ENVD_SOCKET": str(home / "envd.sock")}
    if cache is not None:
        env["ENVD_CACHE"] = str(cache)
    return resolve_paths(env)


def test_a_new_home_is_made_0700_with_its_folders(tmp_path: Path) -> None:
    paths = paths_in(tmp_path / "a" / "home")
    prepare_home(paths)
    for folder in (paths.home, paths.logs, paths.private_run, paths.cache):
        assert mode(folder) == 0o700, folder


def test_a_loose_home_and_its_files_are_tightened(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "cache" / "debian").mkdir(parents=True)
    home.chmod(0o755)
    (home / "logs").chmod(0o755)
    (home / "cache").chmod(0o775)
    (home / "cache" / "debian").chmod(0o755)
    for name in ("envd.db", "envd.db-wal", "envd.db-shm", "config.yaml", "envd.pid"):
        (home / name).write_text("x")
        (home / name).chmod(0o644)
    for name in ("envd.log", "envd.log.1", "daemon.out"):
        (home / "logs" / name).write_text("x")
        (home / "logs" / name).chmod(0o664)
    prepare_home(paths_in(home))
    assert mode(home) == mode(home / "logs") == 0o700
    assert mode(home / "cache") == mode(home / "cache" / "debian") == 0o700
    for name in ("envd.db", "envd.db-wal", "envd.db-shm", "config.yaml", "envd.pid"):
        assert mode(home / name) == 0o600, name
    for name in ("envd.log", "envd.log.1", "daemon.out"):
        assert mode(home / "logs" / name) == 0o600, name


def test_a_shared_cache_elsewhere_is_not_tightened(tmp_path: Path) -> None:
    cache = tmp_path / "team-cache"
    cache.mkdir()
    cache.chmod(0o755)
    prepare_home(paths_in(tmp_path / "home", cache))
    assert mode(cache) == 0o755


def test_a_shared_folder_is_refused_as_a_home(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(StateError, match="shared folder") as caught:
        prepare_home(paths_in(shared))
    assert caught.value.exit_code == EXIT_DAEMON
    assert mode(shared) == 0o1777  # left as it was


def test_a_file_where_the_home_must_be_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("not a folder")
    with pytest.raises(StateError) as caught:
        prepare_home(paths_in(tmp_path / "home"))
    assert "ENVD_HOME" in (caught.value.hint or "")


def test_a_file_where_the_logs_folder_must_be_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "logs").write_text("in the way")
    with pytest.raises(StateError, match="in the way") as caught:
        prepare_home(paths_in(tmp_path / "home"))
    assert "mv " in (caught.value.hint or "")


def test_clean_tmp_empties_the_scratch_folder_only(tmp_path: Path) -> None:
    paths = paths_in(tmp_path / "home")
    prepare_home(paths)
    (paths.tmp / "envd-build-x" / "deep").mkdir(parents=True)
    (paths.tmp / "envd-build-x" / "deep" / "req.txt").write_text("x")
    (paths.tmp / "stray").write_text("x")
    (paths.home / "keep").write_text("x")
    clean_tmp(paths)
    assert list(paths.tmp.iterdir()) == []
    assert (paths.home / "keep").exists()
    clean_tmp(paths_in(tmp_path / "other"))  # no tmp folder: nothing to do


def test_the_log_and_its_rotations_are_0600(tmp_path: Path) -> None:
    log_file = tmp_path / "envd.log"
    handler = PrivateRotatingFileHandler(log_file, maxBytes=200, backupCount=2)
    logger = logging.getLogger("test-state-home")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(40):
            logger.warning("line %d of the log, long enough to rotate soon", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["envd.log", "envd.log.1", "envd.log.2"]
    assert all(mode(tmp_path / f) == 0o600 for f in files)


def test_an_existing_loose_log_is_tightened_when_opened(tmp_path: Path) -> None:
    log_file = tmp_path / "envd.log"
    log_file.write_text("old\n")
    log_file.chmod(0o644)
    PrivateRotatingFileHandler(log_file).close()
    assert mode(log_file) == 0o600
    assert log_file.read_text() == "old\n"


# ------------------------------------------------------------ sockets


def stale_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()  # the path stays, nothing listens: what a kill -9 leaves


def test_socket_problem_names_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    problem = socket_problem(f, f.lstat().st_mode, os.geteuid(), os.geteuid())
    assert problem is not None and "is a file, not envd's socket" in problem.message
    d = tmp_path / "d"
    d.mkdir()
    problem = socket_problem(d, d.lstat().st_mode, os.geteuid(), os.geteuid())
    assert problem is not None and "is a folder" in problem.message
    s = tmp_path / "s"
    stale_socket(s)
    assert socket_problem(s, s.lstat().st_mode, os.geteuid(), os.geteuid()) is None
    other = socket_problem(s, s.lstat().st_mode, os.geteuid() + 4242, os.geteuid())
    assert other is not None and "belongs to uid" in other.message
    assert "ENVD_SOCKET" in (other.hint or "")


def test_envctl_refuses_a_socket_path_that_is_a_file_and_leaves_it(tmp_path: Path) -> None:
    paths = paths_in(tmp_path / "home")
    paths.home.mkdir()
    paths.socket.write_text("my notes")
    with pytest.raises(StateError, match="not envd's socket") as caught:
        connect(paths)
    assert caught.value.exit_code == EXIT_DAEMON
    assert paths.socket.read_text() == "my notes"
    assert not paths.logs.exists()  # no daemon was started


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_another_users_socket_is_left_alone_by_envctl_and_envd(tmp_path: Path) -> None:
    paths = paths_in(tmp_path / "home")
    prepare_home(paths)
    stale_socket(paths.socket)
    os.chown(paths.socket, 4242, 4242)
    with pytest.raises(StateError, match="belongs to uid 4242"):
        check_socket(paths.socket)
    with pytest.raises(StateError, match="belongs to uid 4242"):
        _prepare_socket(paths)
    assert paths.socket.exists()


def test_envd_replaces_its_own_stale_socket_but_not_a_file(tmp_path: Path) -> None:
    paths = paths_in(tmp_path / "home")
    prepare_home(paths)
    stale_socket(paths.socket)
    _prepare_socket(paths)
    assert not paths.socket.exists()
    paths.socket.write_text("keep me")
    with pytest.raises(StateError):
        _prepare_socket(paths)
    assert paths.socket.read_text() == "keep me"


def test_unusable_path_messages_have_a_fix(tmp_path: Path) -> None:
    for code, words in (
        (errno.ENOSPC, "no space left"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.ENOTDIR, "in the way"),
        (errno.EIO, "cannot use"),
    ):
        err = unusable_path(tmp_path / "envd.db", OSError(code, os.strerror(code)), tmp_path)
        assert words in err.message, code
        assert "ENVD_HOME" in (err.hint or ""), code
        assert err.exit_code == EXIT_DAEMON


# ------------------------------------------------------------ daemon stop


def test_a_zombie_counts_as_exited() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while _alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child.pid)  # exited, not yet reaped: still in the process table
    assert os.path.exists(f"/proc/{child.pid}")
    child.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _alive(live.pid)
    finally:
        live.kill()
        live.wait()


def test_a_failed_start_is_told_in_the_daemons_own_words(tmp_path: Path) -> None:
    from cli.client import _daemon_error

    out = tmp_path / "daemon.out"
    out.write_text("envd: error: an old failure\n  hint: an old hint\n")
    since = out.stat().st_size
    with open(out, "a") as f:
        f.write("some warning\nenvd: error: /x is on a read-only file system\n  hint: remount it\n")
    assert _daemon_error(out, since) == ("/x is on a read-only file system", "remount it")
    out.write_text("Traceback (most recent call last):\n  boom\n")
    assert _daemon_error(out, 0) is None


def test_a_socket_path_under_a_file_is_left_to_the_daemon(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    check_socket(blocker / "envd.sock")  # no error here: the daemon says why it cannot bind
    paths = paths_in(tmp_path / "home")
    prepare_home(paths)
    bad = resolve_paths({"ENVD_HOME": str(paths.home), "ENVD_SOCKET": str(blocker / "s.sock")})
    with pytest.raises(StateError) as caught:
        _prepare_socket(bad)
    assert "ENVD_SOCKET" in (caught.value.hint or "")
