"""Fuzz target: arbitrary bytes as an `envctl load` archive (.tar.gz) and as the image tar
inside one (`docker save`). Only envd's refusals (EnvdError) may escape."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path

from envd.errors import EnvdError
from envd.services.archives import Bounds, read_archive, read_image_tar

# Small bounds: the fuzzer explores the refusals, not the disk.
BOUNDS = Bounds(
    compressed=1 << 20, total=4 << 20, member=2 << 20, members=64, metadata=64 << 10, slack=1 << 20
)
_SPOOL = Path(tempfile.mkdtemp(prefix="envd-fuzz-archive-"))
atexit.register(shutil.rmtree, _SPOOL, ignore_errors=True)


def _fresh() -> Path:
    for entry in _SPOOL.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return _SPOOL


def target(data: bytes) -> None:
    try:
        read_image_tar(io.BytesIO(data), _fresh(), "image.tar", BOUNDS)
    except EnvdError:
        pass
    read_archive(io.BytesIO(data), _fresh(), "archive.tar.gz", BOUNDS)
