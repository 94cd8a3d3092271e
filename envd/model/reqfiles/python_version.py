""".python-version (pyenv, uv)."""

from __future__ import annotations

import re

from envd.model.reqfiles.base import (
    _BOM,
    Parsed,
    Read,
    _Acc,
    _error,
)


def parse_python_version(text: str, path: str = ".python-version", *, root: str = "") -> Parsed:
    """.python-version (pyenv, uv): `3.11` or `3.11.7`; the first version line wins."""
    acc = _Acc(source=path, format=".python-version")
    text = text.removeprefix(_BOM)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(?:cpython-|python)?(3(?:\.\d+){0,2})", line)
        if not match:
            raise _error(
                root,
                path,
                f"`{line}` is not a CPython version",
                number,
                "write e.g. `3.11`; pypy and `system` are not supported",
            )
        acc.python = match.group(1)
        return acc.freeze()
    raise _error(root, path, "no Python version in the file", 1, "write e.g. `3.11`")


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_python_version(text, path, root=root)
