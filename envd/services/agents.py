"""Where a warm container's envd agent lives: the script bind-mounted read-only into it, the
socket folder it listens in (one 0700 folder per container under $ENVD_HOME/run/agents/), and
the first process that starts it on the image's own python3 (or marks the folder when the image
has none, so `enter` falls back to `docker exec`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

AGENT_FILE = "/run/envd/agent.py"
AGENT_SOCKET_DIR = "/run/envd/sock"
AGENT_SOCKET = "agent.sock"
NO_AGENT = "no-agent"  # written beside the socket when the image has no usable python3
AGENT_READY_S = 15.0


def agent_entrypoint() -> list[str]:
    """The first process (under docker's init): the agent on the image's python3, else the
    container's command, `sleep infinity` as always."""
    sock = f"{AGENT_SOCKET_DIR}/{AGENT_SOCKET}"
    return [
        "sh",
        "-c",
        "if python3 -I -S -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; "
        f"then exec python3 -I -S {AGENT_FILE} {sock}; fi; : > {AGENT_SOCKET_DIR}/{NO_AGENT}; "
        'exec "$@"',
        "sh",
    ]


def agent_key(container: str) -> str:
    """A short folder name per container (socket paths must stay under 108 bytes)."""
    return hashlib.sha256(container.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Agents:
    """Where warm containers' agents listen on the host, and as whom they run."""

    folder: Path
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"

    def fits(self, container: str) -> bool:
        """Whether the socket's host path is short enough to connect to (sun_path: 108 bytes)."""
        return len(os.fsencode(self.folder / agent_key(container) / AGENT_SOCKET)) < 108
