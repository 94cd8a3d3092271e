"""Turning what the user typed into what the daemon understands (pure, no grpc)."""

from __future__ import annotations

import os

SPEC = "envd.yaml"


def project_ref(text: str | None) -> str:
    """A registered name stays a name; a directory becomes an absolute path.

    No PROJECT means the current directory. A bare word that is also a directory with an
    envd.yaml in it is taken as that directory.
    """
    text = text or "."
    expanded = os.path.expanduser(text)
    if (
        os.sep in text
        or text in (".", "..")
        or text.startswith("~")
        or os.path.isfile(os.path.join(expanded, SPEC))
    ):
        return os.path.abspath(expanded)
    return text
