"""What sharing a run and pulling one both use: a transfer's progress (bytes and rate),
sizes for people, a file's sha256, and how many blobs move at once."""

from __future__ import annotations

import hashlib
import time
from typing import BinaryIO

from envd.model.runartifact import RunFile
from envd.progress import Progress, Reporter

BLOCK = 1 << 20
PROGRESS_EVERY_S = 0.2
# Blobs sent or fetched at once: the registry hashes what it receives, and one stream
# leaves a core idle on each side.
PARALLEL = 3


class Meter:
    """A transfer's progress: bytes and rate, at most every PROGRESS_EVERY_S (one event per
    block of a large file would flood the stream)."""

    def __init__(self, step: str, file: RunFile, progress: Reporter) -> None:
        self._step = step
        self._file = file
        self._progress = progress
        self._done = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def add(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._shown >= PROGRESS_EVERY_S:
            self._shown = now
            self._emit(now)

    def done(self) -> None:
        self._emit(time.monotonic())

    def _emit(self, now: float) -> None:
        elapsed = now - self._started
        rate = self._done / elapsed if elapsed > 0 else 0.0
        self._progress(
            Progress(
                self._step,
                f"{self._file.path} {human(self._done)} of {human(self._file.size)}, "
                f"{human(int(rate))}/s",
                self._done,
                self._file.size,
                elapsed_s=elapsed,
            )
        )


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def sha256_of(file: BinaryIO) -> str:
    sha = hashlib.sha256()
    for block in iter(lambda: file.read(BLOCK), b""):
        sha.update(block)
    return sha.hexdigest()
