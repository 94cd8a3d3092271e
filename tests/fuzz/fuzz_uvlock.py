"""uv.lock named in `requirements:`: any bytes through its parser."""

from __future__ import annotations

from envd.model.reqfiles import parse_uv_lock


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    parse_uv_lock(text, root="/project")
