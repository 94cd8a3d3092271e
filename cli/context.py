"""The one application object commands receive (click's ctx.obj)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from envd.paths import Paths, resolve_paths

if TYPE_CHECKING:
    from cli.client import Client


@dataclass
class AppContext:
    as_json: bool = False
    paths: Paths = field(default_factory=resolve_paths)
    _client: Client | None = None

    def client(self, start: bool = True) -> Client:
        """The daemon's client; starts the daemon when its socket does not answer."""
        if self._client is None:
            from cli.client import connect

            self._client = connect(self.paths, start=start)
        return self._client
