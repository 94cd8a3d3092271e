"""The public socket: accepts only peers of the daemon's own uid (SO_PEERCRED).

gRPC's Python server cannot hand us the accepted file descriptor, so the daemon owns the public
Unix socket itself: each accepted connection's credentials are checked, and an accepted one is
relayed byte for byte to the gRPC server, which listens on a socket in a private (0700) folder.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
from pathlib import Path

from envd.daemon.sockets import bind_private, shut

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (the enter socket's
    check too)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class PeerGuard:
    def __init__(self, public: Path, backend: Path, uid: int | None = None) -> None:
        self.public = public
        self.backend = backend
        self.uid = os.getuid() if uid is None else uid
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def listen(self) -> None:
        """Bind the public socket with mode 0600 (never briefly wider)."""
        self._listener = bind_private(self.public)
        threading.Thread(target=self._accept_loop, name="peerguard", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        shut(self._listener)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            pid, uid, _ = peer_credentials(conn)
            if uid != self.uid:
                log.warning("refused a connection from uid %d (pid %d): not the owner", uid, pid)
                conn.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(str(self.backend))
            except OSError as exc:
                log.error("cannot reach the gRPC backend at %s: %s", self.backend, exc)
                upstream.close()
                conn.close()
                continue
            _relay(conn, upstream)


def _relay(a: socket.socket, b: socket.socket) -> None:
    done = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if done.is_set():
                a.close()
                b.close()
            done.set()

    threading.Thread(target=pump, args=(a, b), daemon=True, name="relay-in").start()
    threading.Thread(target=pump, args=(b, a), daemon=True, name="relay-out").start()
