"""The one top-level handler: turns every failure into a message and an exit code."""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from typing import Any

import click

from envd import __version__
from envd.errors import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USAGE, EnvdError
from envd.paths import resolve_paths


def run_cli(command: click.Command, argv: list[str] | None) -> int:
    try:
        result: Any = command.main(args=argv, prog_name="envctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except EnvdError as exc:
        _report(exc)
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (`envctl ls | head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
    except Exception:
        return crash_report()
    return int(result) if isinstance(result, int) else 0


def _report(exc: EnvdError) -> None:
    click.echo(f"envctl: error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)


def crash_report() -> int:
    """A bug: keep the traceback in a log with the versions, show one line."""
    paths = resolve_paths()
    log = paths.logs / "envctl-crash.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write(
                f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} envctl {__version__} "
                f"python {platform.python_version()} {platform.platform()} pid {os.getpid()}\n"
                f"argv: {sys.argv!r}\n{traceback.format_exc()}\n"
            )
        where = str(log)
    except OSError:
        where = "stderr"
        traceback.print_exc()
    exc = sys.exc_info()[1]
    click.echo(
        f"envctl: internal error (a bug): {type(exc).__name__}: {exc}\n  details: {where}", err=True
    )
    return EXIT_BUG
