"""build.envd: any bytes through the reader `adopt` uses, which parses and never runs it;
the first byte picks whether included requirements files exist, the rest is the file."""

from __future__ import annotations

from envd.model.reqfiles import parse_build_envd


def target(data: bytes) -> None:
    if not data:
        return
    try:
        text = data[1:].decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    files = {"requirements.txt": "numpy\n-r more.txt\n", "more.txt": "attrs\n"}
    if data[0] % 2:
        files = {}
    parse_build_envd(text, files.get, root="/project")
