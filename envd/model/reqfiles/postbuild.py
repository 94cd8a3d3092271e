"""postBuild (binder/repo2docker): a script run after packages."""

from __future__ import annotations

import posixpath
import shlex

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    SetupStep,
    _Acc,
)


def parse_postbuild(text: str, path: str = "postBuild", *, root: str = "") -> Parsed:
    """postBuild: a script run after packages; a setup step that names the file."""
    acc = _Acc(source=path, format="postBuild")
    first = text.splitlines()[0] if text else ""
    interpreter = "bash"
    if first.startswith("#!"):
        words = first[2:].split()
        if words and words[0].endswith("/env") and len(words) > 1:
            words = words[1:]
        if words:
            interpreter = posixpath.basename(words[0])
            if interpreter == "sh":
                interpreter = "sh"
    acc.setup.append(SetupStep(run=f"{interpreter} {shlex.quote(path)}", files=(path,)))
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_postbuild(text, path, root=root)
