"""The daemon's event bus: what `envctl events` streams."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    kind: str  # "build.started", "build.finished", "build.failed", "project.stale", ...
    project: str = ""
    message: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


class EventBus:
    """Fan-out to any number of subscribers; a slow subscriber loses its oldest events."""

    def __init__(self, backlog: int = 1000) -> None:
        self._subscribers: list[queue.Queue[Event | None]] = []
        self._lock = threading.Lock()
        self._backlog = backlog

    def publish(self, kind: str, project: str = "", message: str = "", **fields: str) -> None:
        event = Event(kind=kind, project=project, message=message, fields=dict(fields))
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            try:
                q.put_nowait(event)
            except queue.Full:
                try:
                    q.get_nowait()
                    q.put_nowait(event)
                except (queue.Empty, queue.Full):
                    pass

    def subscribe(self, is_active: Callable[[], bool] | None = None) -> Iterator[Event]:
        q: queue.Queue[Event | None] = queue.Queue(self._backlog)
        with self._lock:
            self._subscribers.append(q)
        try:
            while True:
                try:
                    event = q.get(timeout=0.5)
                except queue.Empty:
                    if is_active is not None and not is_active():
                        return
                    continue
                if event is None:
                    return
                yield event
        finally:
            with self._lock:
                self._subscribers.remove(q)

    def close(self) -> None:
        with self._lock:
            for q in self._subscribers:
                try:
                    q.put_nowait(None)
                except queue.Full:
                    pass
