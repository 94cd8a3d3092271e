"""The enter hot path, free of click (and, on the fast path, of grpc and protobuf).

`envctl enter P -- CMD` is typed fifty times a day; `cli.main` sends that exact shape here
before importing click. First the fast path: our own stdin/stdout/stderr go to the daemon's
enter socket (SCM_RIGHTS; protocol in envd/daemon/enter_socket.py), which has the warm
container's agent run CMD on them directly (a terminal among them stays on the host: the daemon
relays it through a pipe, envd.gateways.agent_client.TerminalRelay) and records the run; we
relay signals and window sizes and exit with CMD's status (on a remote engine the daemon runs
`docker exec` on them and syncs the files back before it answers). When that socket is absent
or refuses (a container without an agent, ENVD_ENTER_FAST=0), the gRPC Enter call and `docker
exec`, as before.
"""

from __future__ import annotations

# The fast path uses the C modules under socket, signal, struct and json: their Python
# wrappers (enum, re) cost more than the rest of envctl's start together. So the frames (the
# agent's protocol, envd/agent/agent.py) are written and read here by hand, not with the
# agent's codec. Measured for issue 29 (80 interleaved runs each against a fake enter socket,
# shared 2-core host; p25): `envctl enter P -- true` 12.1 ms as is, 18.2 ms with `import json`
# first, 27.0 ms with `import envd.agent.agent` first; `envctl ps` 20.4, 34.4 and 46.6 ms.
# (`python -X importtime -c "import json"`: 4.4 to 5.4 ms, nearly all of it re and enum.)
import _json
import _signal  # type: ignore[import-not-found]  # (no stub; the C half of `signal`)
import _socket
import _struct
import os
import select
import sys

from cli.refs import project_ref
from envd.errors import EXIT_BUG, EXIT_INTERRUPTED, EnvdError

TYPE_CHECKING = False  # not typing's: importing typing (and envd.paths, subprocess) costs ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from cli.client import Client
    from envd.paths import Paths
    from envd.v1 import envd_pb2 as pb

    _T = TypeVar("_T")

FORWARDED: tuple[int, ...] = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
_HEADER = _struct.Struct(">I")  # envd.agent.agent.HEADER (tests/unit/cli/test_enter_codec.py)


def user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"user{os.getuid()}"


def request_target(
    paths: Paths, ref: str, command: list[str], gpus: str, tty: bool, cwd: str
) -> tuple[Client, pb.ExecTarget]:
    """Stream the Enter call: show build progress if any, return the ExecTarget."""
    from cli.client import connect
    from envd.v1 import envd_pb2 as pb

    request = pb.EnterRequest(
        project=pb.ProjectRef(ref=ref),
        command=command,
        gpus=gpus,
        tty=tty,
        cwd=cwd,
        uid=os.getuid(),
        gid=os.getgid(),
        user_name=user_name(),
    )
    client = connect(paths)
    display = None
    try:
        for event in client.enter(request):
            if event.HasField("target"):
                return client, event.target
            if display is None:
                from cli.output import ProgressDisplay

                display = ProgressDisplay()
            display.update(event.progress)
    finally:
        if display is not None:
            display.close()
    raise EnvdError("the daemon sent no exec target")


def exec_argv(target: pb.ExecTarget, interactive_tty: bool) -> list[str]:
    argv = ["docker", "exec", "-i"]
    if interactive_tty:
        argv.append("-t")
    argv += ["-u", target.user, "-w", target.workdir]
    for key, value in sorted(target.env.items()):
        argv += ["-e", f"{key}={value}"]
    return [*argv, target.container_id, *target.argv]


def forward_signals(target: pb.ExecTarget) -> None:
    """Without a TTY, `docker exec` does not pass signals on: send them to the command."""
    import signal
    import subprocess

    from envd.paths import run_pid_file

    pid_file = run_pid_file(target.run_id)  # written by the daemon's wrap_for_signals
    interrupts = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal interrupts
        name = signal.Signals(signum).name.removeprefix("SIG")
        if signum == signal.SIGINT:
            interrupts += 1
            if interrupts >= 3:  # a command that ignores Ctrl-C still ends at the third
                name = "KILL"
        # A signal may come before the command has written its pid: wait for it (5 s at most).
        script = (
            f"i=0; while [ ! -s {pid_file} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; "
            f"kill -{name} $(cat {pid_file})"
        )
        subprocess.run(
            ["docker", "exec", "-u", "0", target.container_id, "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )

    for sig in FORWARDED:
        signal.signal(sig, forward)


# ---------------------------------------------------------------- the fast path


def _dumps(value: object) -> str:
    """JSON of None, bools, ints, strings, lists and dicts (what the fast path sends)."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (_json.encode_basestring_ascii(str(k)) + ":" + _dumps(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    raise TypeError(f"cannot send {type(value).__name__}")


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _parse(text: str, i: int) -> tuple[Any, int]:
    """One JSON value at text[i:] and where it ends (what the daemon sends: its json.dumps)."""
    i = _skip(text, i)
    char = text[i : i + 1]
    if char == '"':
        return _json.scanstring(text, i + 1)
    if char in ("{", "["):
        close = "}" if char == "{" else "]"
        items: list[Any] = []
        i = _skip(text, i + 1)
        while text[i : i + 1] != close:
            if items:
                if text[i : i + 1] != ",":
                    raise ValueError(f"expected , at {i}")
                i += 1
            if char == "{":
                i = _skip(text, i)
                if text[i : i + 1] != '"':
                    raise ValueError(f"expected a key at {i}")
                key, i = _json.scanstring(text, i + 1)
                i = _skip(text, i)
                if text[i : i + 1] != ":":
                    raise ValueError(f"expected : at {i}")
                value, i = _parse(text, i + 1)
                items.append((key, value))
            else:
                value, i = _parse(text, i)
                items.append(value)
            i = _skip(text, i)
        return (dict(items) if char == "{" else items), i + 1
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, i):
            return value, i + len(word)
    end = i
    while end < len(text) and text[end] in "+-0123456789.eE":
        end += 1
    number = text[i:end]
    if not number:
        raise ValueError(f"unexpected {char!r} at {i}")
    return (float(number) if any(c in number for c in ".eE") else int(number)), end


def _loads(data: bytes) -> Any:
    text = data.decode()
    value, end = _parse(text, 0)
    if _skip(text, end) != len(text):
        raise ValueError("trailing data")
    return value


def _frame(message: dict[str, Any]) -> bytes:
    data = _dumps(message).encode()
    return _HEADER.pack(len(data)) + data


def _take_frame(buf: bytearray) -> dict[str, Any] | None:
    """The first complete frame in buf, removed from it; None until one has come whole.
    ValueError when it is not a JSON object (as envd.agent.agent.take_frames)."""
    if len(buf) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack_from(buf)
    if len(buf) < _HEADER.size + size:
        return None
    message = _loads(bytes(buf[_HEADER.size : _HEADER.size + size]))
    del buf[: _HEADER.size + size]
    if not isinstance(message, dict):
        raise ValueError("frame is not a JSON object")
    return message


def _window_size(fd: int) -> list[int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return [size.lines, size.columns] if size.lines and size.columns else None


def _error_of(reply: dict[str, Any]) -> EnvdError:
    """The daemon's "error" frame as the error envctl exits with (its exit code kept)."""
    failed = EnvdError(str(reply.get("message", "")), hint=reply.get("hint"))
    failed.exit_code = int(reply.get("exit_code", EXIT_BUG))
    return failed


class Refused(Exception):
    """The daemon will not take this enter on its socket: use gRPC + docker exec."""


def ask(where: str, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    """One read-only request on the enter socket (envd/model/listing.py) and its reply frame.

    Refused when there is no daemon to ask there, or it does not know the request (an older
    daemon calls it a bad enter request, exit 2): the caller asks over gRPC instead (which
    starts the daemon). The daemon's refusal for another reason is raised as its EnvdError.
    """
    if os.environ.get("ENVD_ENTER_FAST", "1") == "0":  # the socket is not used at all
        raise Refused("ENVD_ENTER_FAST=0")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(where)
            sock.sendall(_frame(request))
            buf = bytearray()
            while (reply := _take_frame(buf)) is None:
                data = sock.recv(1 << 16)
                if not data:
                    raise Refused("the daemon closed the connection without a reply")
                buf += data
        except OSError as exc:
            raise Refused(str(exc)) from None
        except ValueError as exc:  # not a reply this CLI reads: gRPC says it in words
            raise Refused(f"bad reply: {exc}") from None
    finally:
        sock.close()
    if reply.get("op") == "error":
        if reply.get("exit_code") == 2:
            raise Refused(str(reply.get("message", "")))
        raise _error_of(reply)
    return reply


def answered(request: dict[str, Any], read: Callable[[dict[str, Any]], _T | None]) -> _T | None:
    """A read-only request's answer on the daemon's enter socket, as `read` takes it from the
    reply; None when the socket does not answer, the reply is not one `read` knows, the daemon
    refused, or `read` finds nothing to print: the caller then goes on over gRPC (which
    starts the daemon, does the work, or says why not)."""
    try:
        return read(ask(enter_socket_path(), request))
    except (Refused, ValueError, EnvdError):
        return None


def engine_named() -> list[str]:
    """Which engine this environment names (envd.paths.ENGINE_VARIABLES; a test compares)."""
    return [os.environ.get("DOCKER_HOST", ""), os.environ.get("DOCKER_CONTEXT", "")]


def enter_fast(where: str, ref: str, command: list[str], gpus: str, tty: bool) -> int:
    """CMD on our own fds through the daemon's enter socket; Refused to fall back."""
    if os.environ.get("ENVD_ENTER_FAST", "1") == "0":
        raise Refused("ENVD_ENTER_FAST=0")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(where)
    except OSError as exc:
        sock.close()
        raise Refused(str(exc)) from None
    request = {
        "op": "enter",
        "project": ref,
        "argv": command,
        "cwd": os.getcwd(),
        "gpus": gpus,
        "tty": tty,
        "winsize": _window_size(0) if tty else None,
        "term": os.environ.get("TERM", "xterm") if tty else "",
        "user_name": user_name(),
        "engine": engine_named(),
    }
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    caught = [*FORWARDED, _signal.SIGWINCH] if tty else list(FORWARDED)
    previous = {sig: _signal.signal(sig, lambda *_: None) for sig in caught}
    old_wakeup = _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    saved_tty: list[Any] | None = None
    original_tty: list[Any] | None = None
    if tty:
        import termios

        original_tty = termios.tcgetattr(0)
    try:
        try:
            data = _frame(request)
            fds = _struct.pack("3i", 0, 1, 2)
            sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
            if sent < len(data):  # (a send of nothing fails once the daemon has answered)
                sock.sendall(data[sent:])
        except OSError as exc:
            raise Refused(str(exc)) from None
        buf = bytearray()
        while True:
            readable = select.select([sock.fileno(), wake_r], [], [])[0]
            if wake_r in readable:
                for signum in os.read(wake_r, 256):
                    message: dict[str, Any] = {"op": "signal", "signal": signum}
                    if signum == _signal.SIGWINCH:
                        size = _window_size(0)
                        if not size:
                            continue
                        message = {"op": "winsize", "rows": size[0], "cols": size[1]}
                    try:  # (before the start too: the daemon passes it on once CMD runs)
                        sock.sendall(_frame(message))
                    except OSError:  # the daemon has gone: what it said last is still read
                        pass
            if sock.fileno() not in readable:
                continue
            data = sock.recv(1 << 16)
            if not data:
                raise EnvdError("the envd daemon closed the connection before the command ended")
            buf += data
            while (reply := _take_frame(buf)) is not None:
                op = reply.get("op")
                if op == "refused":
                    raise Refused(str(reply.get("reason", "")))
                if op == "error":
                    raise _error_of(reply)
                if op == "started" and tty:
                    import termios
                    import tty as tty_module

                    # The state saved is the one before anything ran: on a remote engine
                    # `docker exec -t` sets the same terminal raw and back on its own, at its
                    # own time, so what it or we see later is not the user's terminal.
                    saved_tty = original_tty
                    tty_module.setraw(0)
                elif op == "exit":
                    if reply.get("error"):
                        sys.stderr.write(f"envctl: error: {reply['error']}\n")
                    return int(reply["status"])
    finally:
        if saved_tty is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved_tty)
        _signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            if handler is not None:
                _signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
        sock.close()


# ---------------------------------------------------------------- gRPC + docker exec


def enter_socket_path(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """envd.paths.Paths.enter_socket, without importing envd.paths (dataclasses, typing)."""
    env = os.environ if environ is None else environ
    home = env.get("ENVD_HOME") or os.path.join(
        os.path.expanduser(env.get("HOME", "~")), ".local/state/envd"
    )
    return os.path.join(os.path.abspath(home), "run", "enter.sock")


def enter(paths: Paths | None, project: str, command: list[str], gpus: str = "") -> int:
    """Run CMD (or a login shell) in the project's warm container; CMD's status is returned."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    if command:
        where = str(paths.enter_socket) if paths is not None else enter_socket_path()
        try:
            return enter_fast(where, project_ref(project), command, gpus, tty)
        except Refused:
            pass
    if paths is None:
        from envd.paths import resolve_paths

        paths = resolve_paths()
    return run_via_grpc(paths, project_ref(project), command, os.getcwd(), gpus, tty)[0]


def run_via_grpc(
    paths: Paths, ref: str, command: list[str], cwd: str, gpus: str = "", tty: bool = False
) -> tuple[int, str]:
    """CMD (or a login shell) through the gRPC Enter call and `docker exec`, as if typed in
    cwd; (its status, the run's id: "" when none was recorded). Used by `enter` when the enter
    socket refuses, and by `rerun`."""
    import subprocess  # (after the fast path: with enum, re and locale it costs milliseconds)

    client, target = request_target(paths, ref, command, gpus, tty, cwd)
    argv = exec_argv(target, tty)
    if command and not tty:
        forward_signals(target)
        # Out of the terminal's process group: a Ctrl-C would kill the docker client and leave
        # the command running unseen. We get the signal and forward it to the command instead.
        proc = subprocess.Popen(argv, start_new_session=True)
    else:
        proc = subprocess.Popen(argv)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            continue  # with a TTY, Ctrl-C went to the command itself; wait for it to end
    code = code if code >= 0 else 128 - code
    if not (target.run_id or target.sync_id):
        return code, ""
    from envd.v1 import envd_pb2 as pb

    request = pb.FinishRunRequest(run_id=target.run_id, exit_code=code, sync_id=target.sync_id)
    try:
        reply = client.finish_run(request)
    except EnvdError as exc:  # the command's status matters more than its record
        what = f"run {target.run_id} not recorded" if target.run_id else "files not synced"
        sys.stderr.write(f"envctl: warning: {what}: {exc.message}\n")
        return code, ""
    for note in reply.notes:  # sync conflicts: the user must know, whatever the status
        sys.stderr.write(f"envctl: {note}\n")
    return code, target.run_id


def parse_fast(argv: list[str]) -> tuple[str, list[str], str] | None:
    """`enter PROJECT [--gpus G] -- CMD...`, or None for anything click should parse."""
    if len(argv) < 3 or argv[0] != "enter":
        return None
    rest = argv[1:]
    gpus = ""
    if rest[:1] == ["--gpus"] and len(rest) > 2:
        gpus, rest = rest[1], rest[2:]
    if len(rest) < 3 or rest[0].startswith("-") or rest[1] != "--":
        return None
    return rest[0], rest[2:], gpus


def main_fast(argv: list[str]) -> int | None:
    """Handle the hot path, or return None to let click take the command line."""
    parsed = parse_fast(argv)
    if parsed is None:
        return None
    project, command, gpus = parsed
    try:
        code = enter(None, project, command, gpus)
    except EnvdError as exc:
        sys.stderr.write(f"envctl: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        return EXIT_INTERRUPTED
    except Exception:
        from cli.errors import crash_report

        return crash_report()
    return code if code is not None else EXIT_BUG
