"""Tables and lines for people, cheap to import: `envctl ps` (cli.everyday) prints with these
before anything else is loaded (no typing, no json, no click). cli.output re-exports them."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing costs `envctl ps` milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


def echo(text: str = "") -> None:
    """One line on stdout (click-free: `ps`, `ls`, `images`, `status` never import click)."""
    sys.stdout.write(text + "\n")


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    echo(line.format(*[h.upper() for h in headers]).rstrip())
    for row in cells:
        echo(line.format(*row).rstrip())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ago(ts: float) -> str:
    if not ts:
        return "-"
    delta = max(0.0, time.time() - ts)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if delta >= size:
            return f"{delta // size:.0f}{unit} ago"
    return f"{delta:.0f}s ago"
