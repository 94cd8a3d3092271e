"""The daemon's memory: freed heap goes back to the system after work, and only then."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from envd.daemon.serve import (
    TRIM_SLACK_BYTES,
    Trimmer,
    allocator_env,
    dump_allocations,
    forget_allocator,
    resident_bytes,
)

MIB = 1 << 20


class Heap:
    """A fake process: its RSS, and a trim that gives back what was freed."""

    def __init__(self, rss: int, freed: int = 0) -> None:
        self.rss = rss
        self.freed = freed
        self.trims = 0

    def trim(self) -> None:
        self.trims += 1
        self.rss -= self.freed
        self.freed = 0


def test_an_idle_daemon_is_not_trimmed() -> None:
    heap = Heap(60 * MIB)
    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss)
    heap.rss += TRIM_SLACK_BYTES  # small growth: no trim
    assert not trimmer.check() and heap.trims == 0


def test_freed_memory_goes_back_after_a_big_operation() -> None:
    heap = Heap(60 * MIB)
    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss)
    heap.rss, heap.freed = 200 * MIB, 140 * MIB  # a build streamed an image and freed it
    assert trimmer.check() and heap.rss == 60 * MIB
    assert not trimmer.check() and heap.trims == 1  # the floor is where the trim left it


def test_memory_that_stays_in_use_is_trimmed_once() -> None:
    heap = Heap(60 * MIB)
    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss)
    heap.rss = 100 * MIB  # live data (nothing freed): trimming cannot help
    assert trimmer.check()
    assert not trimmer.check() and not trimmer.check() and heap.trims == 1


def test_what_work_freed_goes_back_once_the_daemon_is_quiet() -> None:
    """Work that grew RSS by less than the slack, then freed it: trimmed once RSS holds still."""
    heap = Heap(60 * MIB)
    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss, quiet=3)
    heap.rss, heap.freed = 66 * MIB, 6 * MIB  # an enter: grew, and freed what it used
    assert not trimmer.check()  # RSS moved: work is going on
    assert not trimmer.check() and not trimmer.check()
    assert trimmer.check() and heap.rss == 60 * MIB and heap.trims == 1
    for _ in range(10):  # idle: nothing moves, nothing more is trimmed
        assert not trimmer.check()
    assert heap.trims == 1


def test_a_page_or_two_of_jitter_is_not_work() -> None:
    heap = Heap(60 * MIB)
    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss, quiet=1)
    for _ in range(20):
        heap.rss += 4096 if heap.rss == 60 * MIB else -4096
        trimmer.check()
        trimmer.check()
    assert heap.trims == 0


def test_a_cache_let_go_is_trimmed_at_once() -> None:
    """What an idle cache held was freed without RSS growing: the trim follows the shed."""
    heap = Heap(90 * MIB)
    kept = [True]

    def shed() -> bool:
        if not kept[0]:
            return False
        kept[0], heap.freed = False, 20 * MIB
        return True

    trimmer = Trimmer(heap.trim, rss=lambda: heap.rss, shed=shed)
    assert trimmer.check() and heap.rss == 70 * MIB and heap.trims == 1
    assert not trimmer.check() and heap.trims == 1  # nothing more to let go: idle again


def test_resident_bytes_is_this_process() -> None:
    status = Path("/proc/self/status").read_text()
    vmrss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    assert abs(resident_bytes() - vmrss * 1024) < 16 * MIB


def test_the_allocation_dump_names_lines_and_totals(tmp_path: Path) -> None:
    """ENVD_TRACEMALLOC=1 daemons write this on SIGUSR2: where the memory is, and how much."""
    tracemalloc.start()
    try:
        held = [bytearray(1000) for _ in range(1000)]
        dump = dump_allocations(tmp_path)
    finally:
        tracemalloc.stop()
    lines = dump.read_text().splitlines()
    assert " rss " in lines[0] and " traced " in lines[0]
    assert any(__file__ in line for line in lines[1:]) and held
    assert dump.stat().st_mode & 0o777 == 0o600
    info = tmp_path / "malloc-info.xml"  # glibc's own account (C allocations, free pages)
    if info.exists():
        assert info.read_text().startswith("<malloc version=")
        assert info.stat().st_mode & 0o777 == 0o600


def test_the_daemon_starts_again_with_glibcs_malloc_unless_an_allocator_was_chosen() -> None:
    env = allocator_env({"PATH": "/bin", "ENVD_HOME": "/h"})
    if env is None:  # no glibc here (musl): nothing to trim, nothing to start again for
        pytest.skip("no glibc")
    assert env["PYTHONMALLOC"] == "malloc" and env["PATH"] == "/bin" and env["ENVD_HOME"] == "/h"
    assert allocator_env(env) is None  # started again: no second re-exec
    assert allocator_env({"PYTHONMALLOC": "debug"}) is None  # the user's choice stands
    assert allocator_env({"PYTHONMALLOC": "pymalloc"}) is None


def test_what_the_daemon_starts_gets_the_users_environment_back() -> None:
    started = dict(allocator_env({"PATH": "/bin"}) or {"PATH": "/bin"})
    forget_allocator(started)
    assert started == {"PATH": "/bin"}
    chosen = {"PATH": "/bin", "PYTHONMALLOC": "debug"}  # the user's own: kept
    forget_allocator(chosen)
    assert chosen == {"PATH": "/bin", "PYTHONMALLOC": "debug"}
