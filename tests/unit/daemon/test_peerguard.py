"""The public gRPC socket's guard (envd/daemon/peerguard.py): the owner's connections reach the
backend byte for byte, in both directions and with half-closes; anyone else's never do."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.daemon.peerguard import PeerGuard, peer_credentials


class Backend:
    """A stand-in for the gRPC server: answers b"pong:" + everything it read, then closes."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                got = b""
                while data := conn.recv(1 << 16):
                    got += data
                conn.sendall(b"pong:" + got)


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="envd-pg-", dir="/tmp"))  # sun_path: 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def guarded(folder: Path, uid: int | None = None) -> tuple[PeerGuard, Backend]:
    backend = Backend(folder / "backend.sock")
    guard = PeerGuard(folder / "public.sock", folder / "backend.sock", uid=uid)
    guard.listen()
    return guard, backend


def exchange(path: Path, data: bytes) -> bytes:
    """What comes back for data; b"" when the guard hangs up (closed, or reset unread)."""
    reply = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        try:
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)  # the backend sees EOF only through the relay
            while chunk := client.recv(1 << 16):
                reply += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return reply


def test_the_owner_reaches_the_backend_both_ways(folder: Path) -> None:
    guard, backend = guarded(folder)
    try:
        big = os.urandom(300_000)  # more than one read on each side
        assert exchange(folder / "public.sock", big) == b"pong:" + big
        assert exchange(folder / "public.sock", b"again") == b"pong:again"
        assert backend.accepted == 2
    finally:
        guard.close()
        backend.listener.close()


def test_another_uid_is_hung_up_on_and_never_reaches_the_backend(folder: Path) -> None:
    guard, backend = guarded(folder, uid=os.getuid() + 1)
    try:
        assert exchange(folder / "public.sock", b"ping") == b""
        assert backend.accepted == 0
    finally:
        guard.close()
        backend.listener.close()


def test_without_a_backend_the_connection_is_closed(folder: Path) -> None:
    guard = PeerGuard(folder / "public.sock", folder / "absent.sock")
    guard.listen()
    try:
        assert exchange(folder / "public.sock", b"ping") == b""
    finally:
        guard.close()


def test_the_public_socket_is_the_owners_alone(folder: Path) -> None:
    guard, backend = guarded(folder)
    try:
        assert stat.S_IMODE(os.stat(folder / "public.sock").st_mode) == 0o600
    finally:
        guard.close()
        backend.listener.close()


def test_peer_credentials_name_the_process_at_the_other_end() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())
