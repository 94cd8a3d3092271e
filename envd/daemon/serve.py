"""`envd serve`: the daemon's entry point (foreground; `envctl` starts it detached)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import fcntl
import logging
import logging.handlers
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from envd import __version__
from envd.allocator import (
    allocator_env,
    forget_allocator,
    limit_arenas,
)
from envd.allocator import (
    libc as _libc,
)
from envd.errors import EXIT_BUG, EXIT_USER, EnvdError, StateError, unsupported_platform
from envd.paths import (
    FILE_MODE,
    HOME_MODE,
    OTHER_SOCKET,
    Paths,
    resolve_paths,
    socket_problem,
    unusable_path,
)

log = logging.getLogger("envd")

TRIM_EVERY_S = 1.0
TRIM_SLACK_BYTES = 8 << 20  # trim once RSS has grown this much since the last trim
TRIM_QUIET_TICKS = 5  # ... or once it has held still this many looks after work moved it
TRIM_MOVED_BYTES = 1 << 20  # "work": RSS moved by this much (in all) since the last trim
TRACEMALLOC_VARIABLE = "ENVD_TRACEMALLOC"  # set: SIGUSR2 writes logs/tracemalloc.txt
TRACEMALLOC_TOP = 40


def resident_bytes() -> int:
    """This process's resident memory (VmRSS), from /proc/self/statm; 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Trimmer:
    """Gives freed heap back to the system after work (bench's enter phase: 126 MiB resident
    after it without this and the arena limit, 91 MiB with them). Looks every TRIM_EVERY_S; trims
    when RSS has grown by `slack` since the last trim, and once more when work is over: RSS
    moved by TRIM_MOVED_BYTES since the last trim, then held still for `quiet` looks (what the
    work freed after its last growth stayed resident before: 90 MiB after the bench's enter
    phase). An idle daemon costs one small read a look. `shed` lets caches go that an idle
    daemon need not keep (True: it let some go), and a trim follows at once: what they held
    was freed without RSS growing."""

    def __init__(
        self,
        trim: Callable[[], object],
        rss: Callable[[], int] = resident_bytes,
        slack: int = TRIM_SLACK_BYTES,
        shed: Callable[[], bool] | None = None,
        quiet: int = TRIM_QUIET_TICKS,
    ) -> None:
        self._trim = trim
        self._rss = rss
        self._slack = slack
        self._shed = shed
        self._quiet = quiet
        self._floor = self._last = rss()
        self._moved = 0  # how far RSS moved, in all, since the last trim
        self._still = 0  # looks since it last moved
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Trim if RSS grew past the last trim's by more than the slack, if work moved it and
        it has held still since, or if a cache was let go; whether it trimmed."""
        shed = self._shed is not None and self._shed()
        now = self._rss()
        self._moved += abs(now - self._last)
        self._still = self._still + 1 if now == self._last else 0
        self._last = now
        quiet = self._moved >= TRIM_MOVED_BYTES and self._still >= self._quiet
        if not shed and not quiet and now - self._floor <= self._slack:
            self._floor = min(self._floor, now)
            return False
        self._trim()
        self._floor = self._last = self._rss()
        self._moved = self._still = 0
        return True

    def start(self, every: float = TRIM_EVERY_S) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                self.check()

        self._thread = threading.Thread(target=loop, daemon=True, name="trimmer")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()


def dump_allocations(logs: Path) -> Path:
    """logs/tracemalloc.txt: the top allocations by line, the traced total and VmRSS."""
    snapshot = tracemalloc.take_snapshot()
    stats = snapshot.statistics("lineno")
    traced, peak = tracemalloc.get_traced_memory()
    lines = [
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')} rss {resident_bytes() >> 20} MiB, "
        f"traced {traced >> 20} MiB (peak {peak >> 20} MiB)",
        *(str(stat) for stat in stats[:TRACEMALLOC_TOP]),
        "",
    ]
    _write_private(logs / "tracemalloc.txt", "\n".join(lines))
    write_malloc_info(logs / "malloc-info.xml")
    return logs / "tracemalloc.txt"


def write_malloc_info(path: Path) -> bool:
    """glibc's malloc_info(3) at `path` (0600): per arena, what is in use and what is free
    but still resident (what Python's tracemalloc cannot see: C allocations, fragmentation).
    False where there is no glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_info"):
        return False
    _write_private(path, "")
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen(os.fsencode(path), b"w")
    if not stream:
        return False
    try:
        libc.malloc_info(0, stream)
    finally:
        libc.fclose(stream)
    return True


class AlreadyRunning(EnvdError):
    kind = "daemon"


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """envd.log and its rotations: created 0600 (a rotation renames, so they stay 0600)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _private_dir(path: Path, tighten: bool = True) -> None:
    """A folder of envd's, 0700; an existing looser one is tightened when `tighten`."""
    path.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(20, "not a folder", str(path))
    if tighten and stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(HOME_MODE)


def _private_files(folder: Path) -> None:
    """Every plain file directly in `folder` made 0600 (one an older envd left 0644)."""
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
            os.chmod(entry.path, FILE_MODE)


def _check_home_owner(home: Path) -> None:
    """envd makes $ENVD_HOME 0700: refuse a shared folder (/tmp) or someone else's."""
    info = home.stat()
    if info.st_uid != os.geteuid():
        raise StateError(
            f"envd's state folder {home} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.geteuid()})",
            hint="point ENVD_HOME at a folder of your own (e.g. `export "
            "ENVD_HOME=~/.local/state/envd`)",
        )
    if info.st_mode & stat.S_ISVTX or stat.S_IMODE(info.st_mode) & 0o002:
        raise StateError(
            f"{home} is a shared folder (world-writable or sticky); envd keeps its state "
            "private, in a folder of its own",
            hint="point ENVD_HOME at a folder of its own "
            "(e.g. `export ENVD_HOME=~/.local/state/envd`)",
        )


def prepare_home(paths: Paths) -> None:
    """$ENVD_HOME private: the folder and envd's folders in it 0700, its files 0600."""
    home = paths.home
    where = home
    try:
        home.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
        _check_home_owner(home)
        _private_dir(home)
        for folder in (paths.logs, paths.private_run):
            where = folder
            _private_dir(folder)
        where = home
        _private_files(home)
        where = paths.logs
        _private_files(paths.logs)
        where = paths.cache
        inside = paths.cache.is_relative_to(home)
        _private_dir(paths.cache, tighten=inside)  # an $ENVD_CACHE elsewhere may be shared
        if inside:
            for entry in os.scandir(paths.cache):
                if entry.is_dir(follow_symlinks=False):
                    _private_dir(Path(entry.path))
    except OSError as exc:
        raise unusable_path(Path(exc.filename or where), exc, home) from exc


def clean_tmp(paths: Paths) -> None:
    """Empty $ENVD_HOME/tmp (a daemon killed mid-build leaves files there); only once this
    daemon holds the instance lock, so no live daemon's files go."""
    if not paths.tmp.is_dir() or paths.tmp.is_symlink():
        return
    _private_dir(paths.tmp)
    for entry in os.scandir(paths.tmp):
        log.info("removing %s, left by an earlier daemon", entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(text)


def _setup_logging(paths: Paths, foreground: bool) -> None:
    handler: logging.Handler = PrivateRotatingFileHandler(
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
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, FILE_MODE)
    handle = os.fdopen(fd, "a+")  # held until exit
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
    """Make the socket's folder private, replace a stale socket of ours, refuse a live one,
    another user's, or anything that is not a socket."""
    try:
        paths.socket.parent.mkdir(parents=True, exist_ok=True, mode=HOME_MODE)
        try:
            info = paths.socket.lstat()
        except FileNotFoundError:
            info = None
        if info is not None:
            problem = socket_problem(paths.socket, info.st_mode, info.st_uid, os.geteuid())
            if problem is not None:
                raise problem
            if _socket_answers(paths.socket):
                raise AlreadyRunning(
                    f"something already answers on {paths.socket}",
                    hint="stop it with `envctl daemon stop`, or set ENVD_SOCKET to another path",
                )
            paths.socket.unlink()
        backend = paths.private_run / "grpc.sock"
        if backend.exists() or backend.is_symlink():
            backend.unlink()
    except OSError as exc:
        where = Path(exc.filename or paths.socket)
        raise unusable_path(where, exc, paths.socket.parent, OTHER_SOCKET) from exc
    return backend


def serve(paths: Paths, foreground: bool = True) -> int:
    import grpc

    from envd.daemon.engine_guard import EngineGuard, engine_choice
    from envd.daemon.enter_socket import EnterSocket
    from envd.daemon.interceptor import ErrorInterceptor
    from envd.daemon.peerguard import PeerGuard
    from envd.daemon.servicer import Servicer
    from envd.daemon.wiring import build_services
    from envd.gateways.git import prestart_reader
    from envd.v1 import envd_pb2_grpc

    prepare_home(paths)
    try:
        instance = _take_instance_lock(paths)
        _setup_logging(paths, foreground)
        clean_tmp(paths)
    except OSError as exc:
        raise unusable_path(Path(exc.filename or paths.home), exc, paths.home) from exc
    backend = _prepare_socket(paths)

    frames = os.environ.get(TRACEMALLOC_VARIABLE, "")
    if frames:  # "1", or how many frames of each allocation's traceback to keep
        tracemalloc.start(max(1, int(frames)) if frames.isdigit() else 1)
        signal.signal(signal.SIGUSR2, lambda *_: dump_allocations(paths.logs))
    services = build_services(paths)
    prestart_reader()  # the git reader's start-up off the first enter's path
    engine_guard = EngineGuard(engine_choice(os.environ))  # the environment chose our engine
    stop = threading.Event()
    # Before anyone can learn our pid (the pid file, the socket answering): a SIGTERM from
    # then on shuts down cleanly, never by the default action that leaves the socket behind.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = grpc.server(
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"),
        interceptors=[ErrorInterceptor(str(paths.log_file), engine_guard)],
        options=[("grpc.so_reuseport", 0)],
    )
    envd_pb2_grpc.add_EnvdServicer_to_server(  # type: ignore[no-untyped-call]
        Servicer(services, stop.set), server
    )
    server.add_insecure_port(f"unix:{backend}")
    server.start()
    guard = PeerGuard(paths.socket, backend)
    fast_enter = EnterSocket(
        paths.enter_socket,
        services.entering,
        guard=engine_guard,
        containers=services.warm.refresh,  # `envctl ps` without gRPC
        reshare=services.sharing.push_unchanged,  # `share image` with nothing to move
    )
    try:
        services.start()  # adopt warm containers before the first request can race us to them
        guard.listen()
        fast_enter.listen()  # the enter hot path: fds to the warm container's agent
        _write_private(paths.pid_file, f"{os.getpid()}\n")
    except BaseException as exc:
        fast_enter.close()
        guard.close()
        server.stop(grace=None)
        services.close()
        instance.close()
        if isinstance(exc, OSError):
            where = Path(exc.filename or paths.socket)
            raise unusable_path(where, exc, paths.home) from exc
        raise

    libc = _libc()
    trimmer = (
        Trimmer(lambda: libc.malloc_trim(0), shed=services.content.shed)
        if libc is not None
        else None
    )
    if trimmer is not None:
        trimmer.start()
    log.info("envd %s serving on %s (pid %d)", __version__, paths.socket, os.getpid())
    try:
        while not stop.wait(3600):
            pass
    finally:
        log.info("shutting down")
        if trimmer is not None:
            trimmer.close()
        guard.close()
        fast_enter.close()
        server.stop(grace=2).wait(5)
        services.close()
        for leftover in (paths.socket, backend, paths.pid_file):
            try:
                leftover.unlink()
            except OSError:  # gone already, or the file system went read-only meanwhile
                pass
        instance.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    refused = unsupported_platform(sys.platform)
    if refused is not None:
        print(f"envd: error: {refused}", file=sys.stderr)
        return refused.exit_code
    if argv is None:  # started as a command (a caller passing argv keeps its own process)
        if (env := allocator_env(dict(os.environ))) is not None:
            os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
        forget_allocator(os.environ)
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
    limit_arenas(_libc())  # before any thread allocates
    try:
        return serve(resolve_paths())
    except EnvdError as exc:
        log.error("envd cannot start: %s", exc)  # when the log is open already
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
