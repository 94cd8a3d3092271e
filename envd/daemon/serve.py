"""`envd serve`: the daemon's entry point (foreground; `envctl` starts it detached)."""

from __future__ import annotations

import argparse
import fcntl
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from envd import __version__
from envd.errors import EXIT_BUG, EXIT_USER, EnvdError
from envd.paths import Paths, resolve_paths

log = logging.getLogger("envd")


class AlreadyRunning(EnvdError):
    kind = "daemon"


def _setup_logging(paths: Paths, foreground: bool) -> None:
    paths.logs.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler = logging.handlers.RotatingFileHandler(
        paths.log_file, maxBytes=5_000_000, backupCount=3
    )
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    if foreground and sys.stderr.isatty():
        console = logging.StreamHandler()
        console.setFormatter(fmt)
        root.addHandler(console)


def _socket_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _take_instance_lock(paths: Paths) -> IO[str]:
    """One daemon per $ENVD_HOME: an flock held for the daemon's lifetime."""
    handle = open(paths.home / "daemon.lock", "a+")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        pid = _read_pid(paths)
        raise AlreadyRunning(
            f"another envd is already running for {paths.home}"
            + (f" (pid {pid})" if pid else "")
            + f" on {paths.socket}",
            hint="use it, or stop it with `envctl daemon stop`",
        ) from None
    return handle


def _read_pid(paths: Paths) -> int:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return 0


def _prepare_socket(paths: Paths) -> Path:
    """Make the socket's folder private, replace a stale socket, refuse a live one."""
    paths.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if paths.socket.exists() or paths.socket.is_symlink():
        if _socket_answers(paths.socket):
            raise AlreadyRunning(
                f"something already answers on {paths.socket}",
                hint="stop it with `envctl daemon stop`, or set ENVD_SOCKET to another path",
            )
        paths.socket.unlink()
    private = paths.home / "run"
    private.mkdir(mode=0o700, exist_ok=True)
    private.chmod(0o700)
    backend = private / "grpc.sock"
    if backend.exists():
        backend.unlink()
    return backend


def serve(paths: Paths, foreground: bool = True) -> int:
    import grpc

    from envd.daemon.interceptor import ErrorInterceptor
    from envd.daemon.peerguard import PeerGuard
    from envd.daemon.servicer import Servicer
    from envd.daemon.wiring import build_services
    from envd.v1 import envd_pb2_grpc

    paths.home.mkdir(parents=True, exist_ok=True)
    instance = _take_instance_lock(paths)
    _setup_logging(paths, foreground)
    backend = _prepare_socket(paths)

    services = build_services(paths)
    stop = threading.Event()
    server = grpc.server(
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"),
        interceptors=[ErrorInterceptor(str(paths.log_file))],
        options=[("grpc.so_reuseport", 0)],
    )
    envd_pb2_grpc.add_EnvdServicer_to_server(  # type: ignore[no-untyped-call]
        Servicer(services, stop.set), server
    )
    server.add_insecure_port(f"unix:{backend}")
    server.start()
    services.start()  # adopt warm containers before the first request can race us to them
    guard = PeerGuard(paths.socket, backend)
    guard.listen()
    from envd.daemon.enter_socket import EnterSocket

    fast_enter = EnterSocket(paths.enter_socket, services.entering)
    fast_enter.listen()  # the enter hot path: fds to the warm container's agent
    paths.pid_file.write_text(f"{os.getpid()}\n")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("envd %s serving on %s (pid %d)", __version__, paths.socket, os.getpid())
    try:
        while not stop.wait(3600):
            pass
    finally:
        log.info("shutting down")
        guard.close()
        fast_enter.close()
        server.stop(grace=2).wait(5)
        services.close()
        for leftover in (paths.socket, backend, paths.pid_file):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        instance.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="envd", description="the envd daemon")
    parser.add_argument("--version", action="version", version=f"envd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the daemon in the foreground")
    serve_cmd.add_argument(
        "--socket",
        help="Unix socket path (default: $ENVD_SOCKET, else $XDG_RUNTIME_DIR/envd/envd.sock, "
        "else $ENVD_HOME/envd.sock)",
    )
    serve_cmd.add_argument("--home", help="state folder (default: $ENVD_HOME)")
    args = parser.parse_args(argv)
    if args.home:
        os.environ["ENVD_HOME"] = args.home
    if args.socket:
        os.environ["ENVD_SOCKET"] = args.socket
    try:
        return serve(resolve_paths())
    except EnvdError as exc:
        print(f"envd: error: {exc}", file=sys.stderr)
        return exc.exit_code or EXIT_USER
    except Exception:
        log.exception("envd crashed")
        print(
            f"envd: internal error (a bug); details in {resolve_paths().log_file}", file=sys.stderr
        )
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
