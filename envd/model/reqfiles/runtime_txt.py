"""runtime.txt (binder/repo2docker): the Python runtime."""

from __future__ import annotations

import re

from envd.model.reqfiles.base import (
    _BOM,
    Parsed,
    Read,
    _Acc,
    _error,
)


def parse_runtime_txt(text: str, path: str = "runtime.txt", *, root: str = "") -> Parsed:
    """runtime.txt: `python-3.10`, `python-3`, `python-3.10.4`."""
    acc = _Acc(source=path, format="runtime.txt")
    text = text.removeprefix(_BOM)
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise _error(root, path, "the file is empty", 1, "write e.g. `python-3.11`")
    number, line = lines[0]
    match = re.fullmatch(r"python-(3(?:\.\d+){0,2})", line)
    if not match:
        raise _error(
            root,
            path,
            f"`{line}` is not a Python runtime",
            number,
            "write `python-3.11` (or `python-3`); R runtimes (`r-...`) are not supported",
        )
    acc.python = match.group(1)
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_runtime_txt(text, path, root=root)
