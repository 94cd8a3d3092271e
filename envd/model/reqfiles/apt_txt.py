"""apt.txt (binder/repo2docker): Debian packages."""

from __future__ import annotations

import re

from envd.model.reqfiles.base import (
    _BOM,
    Parsed,
    Read,
    _Acc,
    _error,
)


def parse_apt_txt(text: str, path: str = "apt.txt", *, root: str = "") -> Parsed:
    """apt.txt: one Debian package per line; `#` comments."""
    acc = _Acc(source=path, format="apt.txt")
    text = text.removeprefix(_BOM)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        for name in line.split():
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?", name):
                raise _error(
                    root,
                    path,
                    f"`{name}` is not a Debian package name",
                    number,
                    "one package per line: lowercase letters, digits and + - .",
                )
            if name not in acc.system:
                acc.system.append(name)
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_apt_txt(text, path, root=root)
