"""Where envd keeps its socket, state, logs and caches (pure: reads only the environment),
and how a path that cannot be used is explained (the checks themselves do I/O elsewhere)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envd.errors import StateError

# What picks the Docker engine, in the order the engine gateway reads them. A daemon serves one
# engine: clients send these so it can refuse a command meant for another
# (envd/daemon/engine_guard.py; cli/entering.py names them literally, a unit test compares).
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_CONTEXT")

HOME_MODE = 0o700  # $ENVD_HOME and every folder envd makes in it
FILE_MODE = 0o600  # every file envd writes in it


@dataclass(frozen=True)
class Paths:
    home: Path
    socket: Path
    cache: Path  # content-addressed caches (base tarballs, uv): $ENVD_CACHE or $ENVD_HOME/cache

    @property
    def database(self) -> Path:
        return self.home / "envd.db"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "envd.log"

    @property
    def config_file(self) -> Path:
        return self.home / "config.yaml"

    @property
    def pid_file(self) -> Path:
        return self.home / "envd.pid"

    @property
    def lock_file(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def tmp(self) -> Path:
        """Scratch space of the daemon; emptied at each start."""
        return self.home / "tmp"

    @property
    def private_run(self) -> Path:
        """The daemon's private (0700) folder: the gRPC backend, the enter socket, agents."""
        return self.home / "run"

    @property
    def enter_socket(self) -> Path:
        """The enter hot path's socket (SCM_RIGHTS, not gRPC), mode 0600 in the 0700 folder."""
        return self.private_run / "enter.sock"

    @property
    def agents(self) -> Path:
        """Per warm container, a 0700 folder (its agent's socket) bind-mounted at /run/envd/sock."""
        return self.private_run / "agents"


OTHER_HOME = "or point ENVD_HOME at a folder of your own that is writable"
OTHER_SOCKET = "or point ENVD_SOCKET at a path of your own"


def unusable_path(
    path: Path, exc: OSError, home: Path, alternative: str = OTHER_HOME
) -> StateError:
    """Why envd cannot write `path` (in its state folder `home`), with a fix that works;
    `alternative` is the other way out (another ENVD_HOME; another ENVD_SOCKET)."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StateError(
            f"no space left on the file system of {home} to write {path.name}; nothing was changed",
            hint=f"free some space there (`df -h {home}`), {alternative}, then retry",
        )
    if code == errno.EROFS:
        return StateError(
            f"envd's state folder {home} is on a read-only file system",
            hint=f"remount it read-write, {alternative}",
        )
    if code in (errno.EACCES, errno.EPERM):
        return StateError(
            f"envd may not write {path}: permission denied",
            hint=f"`chmod u+rwx {home}` (it must be yours), {alternative}",
        )
    if code in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return StateError(
            f"{exc.filename or path} is in the way: a file stands where envd needs a folder "
            "(or the reverse)",
            hint=f"move it aside (`mv {exc.filename or path} {exc.filename or path}.old`), "
            f"{alternative}",
        )
    return StateError(
        f"envd cannot use {path}: {exc.strerror or exc}",
        hint=f"check the file system and the permissions of {home}, {alternative}",
    )


def socket_problem(path: Path, mode: int, owner: int, uid: int) -> StateError | None:
    """What is wrong with an existing socket path (its lstat mode and owner); None if nothing."""
    other = (
        "set ENVD_SOCKET to a path of your own "
        "(e.g. `export ENVD_SOCKET=~/.local/state/envd/envd.sock`)"
    )
    if not stat.S_ISSOCK(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "a file"
        return StateError(
            f"{path} is {kind}, not envd's socket; envd will not replace it",
            hint=f"remove it if nothing needs it (`rm {path}`), or {other}",
        )
    if owner != uid:
        return StateError(
            f"the socket {path} belongs to uid {owner}, not to you (uid {uid}): "
            "another user's envd",
            hint=other,
        )
    return None


def resolve_paths(environ: Mapping[str, str] | None = None) -> Paths:
    """$ENVD_HOME (default ~/.local/state/envd); socket: $ENVD_SOCKET, else
    $XDG_RUNTIME_DIR/envd/envd.sock, else $ENVD_HOME/envd.sock."""
    env = os.environ if environ is None else environ
    home = Path(
        env.get("ENVD_HOME") or Path(env.get("HOME", "~")).expanduser() / ".local/state/envd"
    )
    if env.get("ENVD_SOCKET"):
        socket = Path(env["ENVD_SOCKET"])
    elif env.get("XDG_RUNTIME_DIR"):
        socket = Path(env["XDG_RUNTIME_DIR"]) / "envd" / "envd.sock"
    else:
        socket = home / "envd.sock"
    cache = Path(env["ENVD_CACHE"]) if env.get("ENVD_CACHE") else home / "cache"
    return Paths(home=home.absolute(), socket=socket.absolute(), cache=cache.absolute())


def run_pid_file(run_id: str) -> str:
    """Inside a warm container: where a run's pid is kept for signal forwarding (no TTY)."""
    return f"/tmp/.envd-run-{run_id}.pid"
