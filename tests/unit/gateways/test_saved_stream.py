"""The engine's `docker save` stream as the saved-image reader reads it: chunks handed on as
they came, the same bytes in the same order."""

from __future__ import annotations

import io

from envd.gateways.engine.saved import ChunkReader, ChunkStream


def test_every_chunk_comes_through_in_order() -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(50)]
    reader = io.BufferedReader(ChunkReader(iter(chunks)), 4096)
    assert reader.read() == b"".join(chunks)


def test_chunks_that_fit_are_handed_on_as_they_came() -> None:
    chunks = [b"a" * 100, b"b" * 300, b"c" * 50]
    stream = ChunkStream(iter(chunks))
    first = stream.read(100)
    assert first is chunks[0]  # not copied
    assert stream.read(120) == b"b" * 120 and stream.read(1000) == b"b" * 180
    assert stream.read() == b"c" * 50 and stream.read(10) == b""
