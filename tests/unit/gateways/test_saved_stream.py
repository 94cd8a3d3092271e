"""The engine's `docker save` stream, read ahead by a thread: the same bytes in the same order,
the engine's error where it broke off, and the engine's stream closed when reading stops early."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest

from envd.gateways.engine.saved import ChunkReader, ChunkStream, Prefetched


class EngineBroke(OSError):
    pass


def test_every_chunk_comes_through_in_order() -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    reader = io.BufferedReader(ChunkReader(Prefetched(iter(chunks), depth=3)), 4096)
    assert reader.read() == b"".join(chunks)


def test_the_engines_error_is_raised_after_the_bytes_it_sent() -> None:
    def broken() -> Iterator[bytes]:
        yield b"abc"
        yield b"def"
        raise EngineBroke("connection reset")

    prefetched = Prefetched(broken())
    assert next(prefetched) == b"abc"
    assert next(prefetched) == b"def"
    with pytest.raises(EngineBroke, match="connection reset"):
        next(prefetched)


def test_stopping_early_closes_the_engines_stream() -> None:
    closed = threading.Event()

    def endless() -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 1024
        finally:
            closed.set()

    reader = ChunkReader(Prefetched(endless(), depth=2))
    assert reader.read(10) == b"x" * 10
    reader.close()
    assert closed.wait(5)


def test_chunks_that_fit_are_handed_on_as_they_came() -> None:
    chunks = [b"a" * 100, b"b" * 300, b"c" * 50]
    stream = ChunkStream(iter(chunks))
    first = stream.read(100)
    assert first is chunks[0]  # not copied
    assert stream.read(120) == b"b" * 120 and stream.read(1000) == b"b" * 180
    assert stream.read() == b"c" * 50 and stream.read(10) == b""
