"""Progress of long calls, reported by domain code and streamed to the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    step: str
    message: str
    current: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    log: bool = False  # a line of a step's log, not a status change


Reporter = Callable[[Progress], None]


def ignore(_: Progress) -> None:
    """A Reporter that drops everything."""
