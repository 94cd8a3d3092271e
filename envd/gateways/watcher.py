"""watchdog: the only module that imports it. Watches project folders (not recursively)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Notify = Callable[[str, str], None]  # (directory, file name)
WRITES = frozenset({"created", "modified", "moved", "deleted", "closed"})


class FolderWatcher:
    """Reports changes to files directly inside watched folders; inotify-backed on Linux."""

    def __init__(self, notify: Notify) -> None:
        from watchdog.observers import Observer

        self._notify = notify
        self._observer: Any = Observer()
        self._watches: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def watch(self, directory: str) -> None:
        with self._lock:
            if directory in self._watches or not Path(directory).is_dir():
                return
            handler = _Handler(directory, self._notify)
            self._watches[directory] = self._observer.schedule(handler, directory, recursive=False)

    def unwatch(self, directory: str) -> None:
        with self._lock:
            watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, ValueError):  # already gone with its folder
                pass

    def watched(self) -> list[str]:
        with self._lock:
            return sorted(self._watches)


class _Handler:
    """A watchdog event handler without subclassing (keeps watchdog's types out of ours)."""

    def __init__(self, directory: str, notify: Notify) -> None:
        self.directory = directory
        self.notify = notify

    def dispatch(self, event: Any) -> None:
        # Opens and reads are events too (envd reading envd.yaml would wake itself forever).
        if event.event_type not in WRITES:
            return
        for attr in ("src_path", "dest_path"):
            path = getattr(event, attr, "")
            if not path:
                continue
            path = path.decode() if isinstance(path, bytes) else str(path)
            if path == self.directory:  # the folder itself (e.g. deleted)
                self.notify(self.directory, "")
            elif str(Path(path).parent) == self.directory:
                self.notify(self.directory, Path(path).name)
