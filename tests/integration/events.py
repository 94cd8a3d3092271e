"""Waiting on what the daemon says it did (`envctl events --json`), not on the wall clock.

A deadline sized for an idle machine fails on a loaded one (the watcher's debounce, watchdog
and the engine all slow down together); an event arrives when the daemon has acted, however
long that took. The bound on each wait only stops a broken daemon from hanging the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tests.conftest import Envctl

HANG_S = 300.0  # only a daemon that never answers gets this far


class EventStream:
    """`envctl events --json` in the background; `wait` returns the next matching event."""

    def __init__(self, envctl: Envctl) -> None:
        self._envctl = envctl
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "events", "--json"],
            env=envctl.env,
            cwd=envctl.cwd,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._seen = 0  # `wait` looks past the events it already returned
        self._ended = False
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._subscribed()

    def _subscribed(self) -> None:
        """Return once the stream is live: events published before it are never seen, so
        re-set a setting to its own value until its `config.changed` comes through."""
        key = "idle_timeout"
        value = json.loads(self._envctl.ok("--json", "config", key))[key]
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            self._envctl.ok("config", key, value)
            try:
                self.wait("config.changed", lambda e: e["message"] == f"{key}={value}", 2)
                return
            except AssertionError:
                if self._ended:
                    raise
        raise AssertionError("`envctl events` never subscribed")

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                with self._cond:
                    self.events.append(json.loads(line))
                    self._cond.notify_all()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def wait(
        self,
        kind: str,
        match: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = HANG_S,
    ) -> dict[str, Any]:
        """The first event of `kind` (and `match`) after the last one `wait` returned."""

        def found() -> dict[str, Any] | None:
            for i in range(self._seen, len(self.events)):
                event = self.events[i]
                if event["kind"] == kind and match(event):
                    self._seen = i + 1
                    return event
            return None

        with self._cond:
            hit: list[dict[str, Any]] = []

            def done() -> bool:
                event = found()
                if event is not None:
                    hit.append(event)
                return bool(hit) or self._ended

            if not self._cond.wait_for(done, timeout):
                raise AssertionError(f"no {kind} event in {timeout:.0f}s: {self.kinds()}")
            if not hit:
                raise AssertionError(f"the event stream ended before {kind}: {self.kinds()}")
            return hit[0]

    def kinds(self) -> list[str]:
        with self._cond:
            return [e["kind"] for e in self.events]

    def close(self) -> list[dict[str, Any]]:
        self._proc.terminate()
        self._proc.wait(timeout=30)
        self._reader.join(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        return self.events

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
