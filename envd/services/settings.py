"""The daemon's settings: $ENVD_HOME/config.yaml, read at start and changed by `envctl config`."""

from __future__ import annotations

import threading
from pathlib import Path

from envd.config import Config, dump_config, parse_config
from envd.errors import EnvdError
from envd.events import EventBus
from envd.gateways.files import write_atomic


class Settings:
    def __init__(self, path: Path, events: EventBus) -> None:
        self._path = path
        self._events = events
        self._lock = threading.Lock()
        self._current = parse_config(path.read_text(), str(path)) if path.exists() else Config()

    @property
    def current(self) -> Config:
        return self._current

    def set(self, key: str, value: str) -> Config:
        """Write the new value first; memory changes only once the file holds it."""
        with self._lock:
            changed = self._current.with_value(key, value)
            try:
                write_atomic(self._path, dump_config(changed))
            except OSError as exc:
                raise EnvdError(
                    f"cannot write {self._path}: {exc.strerror}; `{key}` is unchanged",
                    hint=f"free space or fix the permissions of {self._path.parent}",
                ) from None
            self._current = changed
        self._events.publish("config.changed", message=f"{key}={value}")
        return changed
