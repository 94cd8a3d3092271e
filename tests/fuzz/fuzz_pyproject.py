"""pyproject.toml: any bytes through the parser `adopt` and `project:` use."""

from __future__ import annotations

from envd.model.reqfiles import parse_pyproject


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    parse_pyproject(text, root="/project", extras=("dev",), groups=("test",))
