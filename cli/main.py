"""envctl's entry point. Imports nothing heavy: `enter P -- CMD` goes straight to the
click-free hot path (cli.entering); everything else to the click application (cli.app).

Exit codes: see cli/app.py and README.md.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing itself costs the hot path milliseconds
if TYPE_CHECKING:
    from typing import Any


def main(argv: list[str] | None = None) -> Any:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["enter"]:  # the hot path skips click when the shape is simple
        from cli.entering import main_fast

        code = main_fast(args)
        if code is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # skip interpreter teardown (grpc's threads): pure latency
    from cli.app import cli
    from cli.errors import run_cli

    sys.exit(run_cli(cli, argv))


if __name__ == "__main__":
    main()
