"""envd.lock as committed to a repository: any bytes through the loader `read_lock` uses."""

from __future__ import annotations

from envd.model.lockfile import loads


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    loads(text, "envd.lock")
