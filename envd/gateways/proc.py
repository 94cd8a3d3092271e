"""The one way envd runs host programs: output captured, failures as CommandError.

Each program runs in its own process group, so a timeout or an interrupt (Ctrl-C, a cancelled
call) ends the program and all its children, and none is left running behind envd.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from envd.errors import EnvdError

TAIL_LINES = 200  # how much of a failed program's output an error keeps
_MESSAGE_LINES = 15  # how much of it the message shows
_GRACE_S = 10.0  # between SIGTERM (time to clean up, e.g. mmdebstrap's mounts) and SIGKILL

LineSink = Callable[[str], None]


class CommandError(EnvdError):
    """A host program failed; carries its argv, exit status and the tail of its output."""

    kind = "command"

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        returncode: int,
        output: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = list(argv)
        self.returncode = returncode
        self.output = tail(output, TAIL_LINES)


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str  # "" when on_line was given: stderr then goes to stdout


def tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    on_line: LineSink | None = None,
) -> Completed:
    """Run argv to completion. With `on_line`, stdout and stderr are merged and streamed to it
    (only the last TAIL_LINES lines are kept)."""
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if on_line is not None else subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        raise EnvdError(f"`{argv[0]}` is not installed", hint="run `make setup`") from None
    with proc:
        try:
            if on_line is None:
                stdout, stderr = proc.communicate(input, timeout=timeout)
            else:
                stdout, stderr = _stream(proc, input, timeout, on_line), ""
        except subprocess.TimeoutExpired:
            _end(proc)
            raise CommandError(
                f"`{' '.join(argv[:2])}` did not finish within {timeout or 0:.0f}s",
                argv=argv,
                returncode=-1,
                output="",
            ) from None
        except BaseException:
            _end(proc)
            raise
    if check and proc.returncode != 0:
        output = stdout + stderr
        raise CommandError(
            f"`{' '.join(argv[:2])}` failed (exit {proc.returncode}):\n"
            + tail(output, _MESSAGE_LINES),
            argv=argv,
            returncode=proc.returncode,
            output=output,
        )
    return Completed(proc.returncode, stdout, stderr)


def _stream(
    proc: subprocess.Popen[str], input: str | None, timeout: float | None, on_line: LineSink
) -> str:
    assert proc.stdout is not None
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _end(proc)

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    if input is not None and proc.stdin is not None:
        threading.Thread(target=_write, args=(proc.stdin, input), daemon=True).start()
    kept: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            kept.append(line)
            if len(kept) > TAIL_LINES:
                del kept[0]
            on_line(line)
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(proc.args, timeout or 0)
    return "".join(f"{line}\n" for line in kept)


def _write(stdin: IO[str], text: str) -> None:
    try:
        stdin.write(text)
        stdin.close()
    except (OSError, ValueError):  # the program exited without reading it all
        pass


def _end(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the program's whole process group, then SIGKILL what is left after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=_GRACE_S)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # children that outlived their parent
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
