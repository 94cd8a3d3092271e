"""Unix sockets the daemon listens on: bound 0600 from the start, shut down without a fuss."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def bind_private(path: Path, backlog: int = 64) -> socket.socket:
    """A listening socket at `path`, mode 0600 from the moment it exists (never briefly wider)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    listener.listen(backlog)
    return listener


def shut(listener: socket.socket | None) -> None:
    """Stop accepting (wakes a thread blocked in accept) and close."""
    if listener is None:
        return
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()
