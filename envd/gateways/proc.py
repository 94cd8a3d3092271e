"""The one way envd runs host programs: output captured, failures as CommandError."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from envd.errors import EnvdError


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
        self.output = output


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Completed:
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise EnvdError(f"`{argv[0]}` is not installed", hint="run `make setup`") from None
    except subprocess.TimeoutExpired:
        raise CommandError(
            f"`{argv[0]}` did not finish within {timeout:.0f}s",
            argv=argv,
            returncode=-1,
            output="",
        ) from None
    result = Completed(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CommandError(
            f"`{' '.join(argv[:2])}` failed (exit {proc.returncode}):\n{tail}",
            argv=argv,
            returncode=proc.returncode,
            output=proc.stdout + proc.stderr,
        )
    return result
