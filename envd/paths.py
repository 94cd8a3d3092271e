"""Where envd keeps its socket, state, logs and caches (pure: reads only the environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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
