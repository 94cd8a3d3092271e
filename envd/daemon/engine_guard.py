"""One daemon, one engine: a command whose environment names another engine is refused.

The daemon picks its engine once, from its own environment (DOCKER_HOST, else DOCKER_CONTEXT,
else the current Docker context). A later `DOCKER_HOST=ssh://gpu envctl build P` talking to a
daemon started without it would otherwise build on the laptop, silently. So every client says
which engine its environment names (gRPC metadata `envd-engine-bin`; a field of the fast enter
request) and the daemon compares it with its own. Status and Shutdown are exempt: they are how
a user sees and stops the daemon that is in the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envd.errors import DaemonUnavailable
from envd.paths import ENGINE_VARIABLES

EXEMPT = frozenset({"/envd.v1.Envd/Status", "/envd.v1.Envd/Shutdown"})


def engine_choice(environ: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(environ.get(name, "") for name in ENGINE_VARIABLES)


def encode(choice: Sequence[str]) -> bytes:
    return "\0".join(choice).encode("utf-8", errors="surrogateescape")


def decode(raw: bytes | str) -> tuple[str, ...]:
    text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
    values = text.split("\0")
    return tuple((values + [""] * len(ENGINE_VARIABLES))[: len(ENGINE_VARIABLES)])


def describe(choice: Sequence[str]) -> str:
    named = [f"{k}={v}" for k, v in zip(ENGINE_VARIABLES, choice, strict=True) if v]
    return ", ".join(named) or "no DOCKER_HOST or DOCKER_CONTEXT (the current Docker context)"


class EngineGuard:
    def __init__(self, own: Sequence[str]) -> None:
        self.own = tuple(own)

    def check(self, theirs: Sequence[str] | None) -> None:
        """Raise when the client's environment names another engine than ours. A client that
        says nothing (another gRPC client, an older envctl) is not refused."""
        if theirs is None or tuple(theirs) == self.own:
            return
        raise DaemonUnavailable(
            f"the envd daemon of this ENVD_HOME uses the engine its environment named "
            f"({describe(self.own)}), but this command's environment names another "
            f"({describe(theirs)})",
            hint="`envctl daemon stop`, then rerun: the next command starts a daemon for this "
            "engine (or give each engine its own ENVD_HOME)",
        )
