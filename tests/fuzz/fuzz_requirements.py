"""requirements.txt: any bytes through the pip-format parser, `-r`/`-c` includes served from
the same bytes (a file may include itself, or a name that is missing)."""

from __future__ import annotations

from envd.model.reqfiles import parse_requirements


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)

    def read(relpath: str) -> str | None:
        return None if relpath.startswith("missing") else text

    parse_requirements("requirements.txt", read, root="/project")
