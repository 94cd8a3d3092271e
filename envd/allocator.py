"""The daemon's memory allocator: one glibc arena, and Python's small objects from glibc.

An idle daemon should give back what a burst of work (a saved image streamed, a layer hashed)
made it hold. Two things keep freed memory resident otherwise, and both are set here, before
the daemon starts a thread. `envctl` starts the daemon in `allocator_env`'s environment at once;
a daemon started by hand starts itself again, as the same process, in it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import MutableMapping
from typing import Any

# glibc gives each thread that allocates its own arena (up to 8 per core), and an arena keeps the
# high-water mark of what its thread streamed (a saved image, a layer) resident once it is freed.
# One arena: malloc_trim(3) gives back only the main arena's free top, never a second arena's
# (after the bench's enter phase the second of two arenas held 10.8 MB, 9.8 MB of it free, all
# resident: 88.6 MiB idle with 20 projects, against 79.9 with one arena). The daemon's threads
# mostly wait; the one lock is not contended.
ARENA_MAX = 1
M_ARENA_MAX = -8  # mallopt(3)

# Python's small-object allocator keeps a 1 MiB arena while one object in it lives, and the
# free 16 KiB pools in it resident: after the bench's enter phase 38 arenas held 25 MB of live
# objects and 12 MB of free pools, which no trim can give back. With PYTHONMALLOC=malloc small
# objects come from glibc too, whose free pages malloc_trim gives back: 71.5 MiB idle with 20
# projects, against 79.9 (the content hash of a 20,000-file image: 3% more CPU). Python reads
# it only at start.
ALLOCATOR_VARIABLE = "PYTHONMALLOC"
ALLOCATOR_MARK = "ENVD_ALLOCATOR_SET"  # set with it by envd only: taken out again at start


def libc() -> Any:
    """glibc, or None (musl, macOS: no mallopt/malloc_trim; memory is left to the allocator)."""
    name = ctypes.util.find_library("c")
    try:
        found = ctypes.CDLL(name)
    except OSError:
        return None
    return found if hasattr(found, "malloc_trim") and hasattr(found, "mallopt") else None


def limit_arenas(glibc: Any) -> None:
    """At most ARENA_MAX malloc arenas; called before any thread is started."""
    if glibc is not None:
        glibc.mallopt(M_ARENA_MAX, ARENA_MAX)


def allocator_env(environ: dict[str, str]) -> dict[str, str] | None:
    """The environment to start the daemon in, with glibc's malloc for Python's small
    objects; None where it runs so already, where the user chose an allocator
    (PYTHONMALLOC=debug, pymalloc), or where there is no glibc to trim."""
    if ALLOCATOR_VARIABLE in environ or ALLOCATOR_MARK in environ or libc() is None:
        return None
    return {**environ, ALLOCATOR_VARIABLE: "malloc", ALLOCATOR_MARK: "1"}


def forget_allocator(environ: MutableMapping[str, str]) -> None:
    """Once started: the processes the daemon starts get the user's environment."""
    if environ.pop(ALLOCATOR_MARK, None) is not None:
        environ.pop(ALLOCATOR_VARIABLE, None)
