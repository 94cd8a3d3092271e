"""envctl's entry point. Imports nothing heavy: `enter P -- CMD` goes straight to the
click-free hot path (cli.entering); `--help` and plain `ps`, `ls`, `images`, `status [P]` to
their click-free forms (cli.catalog, cli.everyday); a plain `build [P]` whose image is up to
date is answered on the enter socket (cli.buildcheck), and so is a plain `share image P --to
REF` whose image the registry holds already (cli.sharecheck); everything else to the click
application.

Exit codes: see cli/app.py and README.md.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs the hot path milliseconds
if TYPE_CHECKING:
    from typing import Any

EVERYDAY = ("ps", "ls", "images", "status")  # cli.everyday answers their plain forms


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    if not sys.platform.startswith("linux"):
        from envd.errors import unsupported_platform

        refused = unsupported_platform(sys.platform)
        if refused is not None:
            sys.stderr.write(f"envctl: error: {refused}\n")
            sys.exit(refused.exit_code)
    if args[:1] == ["enter"]:  # the hot path skips click when the shape is simple
        from cli.entering import main_fast

        code = main_fast(args)
        if code is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # skip interpreter teardown (grpc's threads): pure latency
    if args in (["--help"], ["-h"]):
        from cli.catalog import help_text

        text = help_text()
        if text is not None:  # else the terminal is narrow: click wraps the lines
            sys.stdout.write(text)
            sys.exit(0)
    elif (args[1:2] if args[:1] == ["--json"] else args[:1]) in ([c] for c in EVERYDAY):
        from cli.everyday import main_fast as everyday

        code = everyday(args)
        if code is not None:
            if argv is not None:  # called, not run: leave the interpreter to its caller
                sys.exit(code)
            _exit_now(code)
    elif args[:2] == ["share", "image"]:
        from cli.sharecheck import share_fast

        if share_fast(args):  # nothing to push: answered on the enter socket, no grpc nor click
            if argv is not None:
                sys.exit(0)
            _exit_now(0)
    elif args[:1] == ["build"]:
        from cli.buildcheck import build_fast

        if build_fast(args):  # up to date: answered on the enter socket, no grpc nor click
            if argv is not None:
                sys.exit(0)
            _exit_now(0)
    from cli.app import cli
    from cli.errors import run_cli

    sys.exit(run_cli(cli, argv))


def _exit_now(code: int) -> None:
    """Exit without interpreter teardown (grpc's threads), once the output is out."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # the reader left (`envctl ls | head`)
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
