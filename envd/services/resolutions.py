"""uv's resolutions, remembered by everything that can change them.

A lock made again with nothing changed (say, after deleting envd.lock) asks uv the same
question as before. The answer depends only on the question (requirements, constraints,
target Python and platform, indexes, preferences, direct files by sha256, uv's version) and
on what the indexes list. The question is the key; the indexes' answers are taken as
unchanged for as long as an index says its pages stay fresh (PyPI: `Cache-Control:
max-age=600`, which uv honours too), so a remembered resolution is exactly what uv would say
within that time, and an older one is resolved again. `--upgrade` always asks uv.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Protocol

from envd.model.lockfile import PythonPackage

log = logging.getLogger(__name__)

FRESH_S = 600.0  # PyPI's max-age for its simple pages
KEY_PREFIX = "resolution:"
INDEX_KEY = "resolutions"  # the remembered digests, oldest first
KEEP = 64  # answers remembered at most (a few KiB each): older ones are forgotten


class KeyValue(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...


Resolver = Callable[..., tuple[PythonPackage, ...]]


class Resolutions:
    """`resolve(...)`, with uv.resolve's arguments: uv's answer, remembered or fresh."""

    def __init__(
        self,
        cache: KeyValue,
        resolver: Resolver,
        uv_version: Callable[[], str],
        *,
        clock: Callable[[], float] = time.time,
        fresh_s: float = FRESH_S,
    ) -> None:
        self._cache = cache
        self._resolver = resolver
        self._uv_version = uv_version
        self._clock = clock
        self._fresh_s = fresh_s

    def resolve(
        self,
        requirements: Sequence[str],
        *,
        preferences: Sequence[PythonPackage] = (),
        upgrade: bool = False,
        upgrade_packages: Sequence[str] = (),
        direct: Mapping[str, PythonPackage] | None = None,
        **settings: object,
    ) -> tuple[PythonPackage, ...]:
        def ask() -> tuple[PythonPackage, ...]:
            return self._resolver(
                requirements,
                preferences=preferences,
                upgrade=upgrade,
                upgrade_packages=upgrade_packages,
                direct=direct,
                **settings,
            )

        if upgrade or upgrade_packages:
            return ask()  # (asking the indexes again is the point)
        question = {
            "requirements": list(requirements),
            "preferences": [asdict(p) for p in preferences],
            "direct": {k: asdict(v) for k, v in sorted((direct or {}).items())},
            "settings": {k: _plain(v) for k, v in sorted(settings.items()) if k != "cache_dir"},
            "uv": self._uv_version(),
        }
        digest = hashlib.sha256(json.dumps(question, sort_keys=True).encode()).hexdigest()
        key = KEY_PREFIX + digest
        now = self._clock()
        remembered = _entry(self._cache.get(key))
        if remembered is not None and 0 <= now - remembered[0] < self._fresh_s:
            log.debug("resolution %s remembered from %.0f s ago", digest[:12], now - remembered[0])
            return remembered[1]
        answer = ask()
        self._cache.put(key, json.dumps({"at": now, "python": [asdict(p) for p in answer]}))
        self._remember(digest)
        return answer

    def _remember(self, digest: str) -> None:
        """Keep the newest KEEP answers; forget (delete) the rest."""
        try:
            known = [d for d in json.loads(self._cache.get(INDEX_KEY) or "[]") if d != digest]
        except ValueError:
            known = []
        known = [d for d in known if isinstance(d, str)] + [digest]
        for old in known[:-KEEP]:
            self._cache.delete(KEY_PREFIX + old)
        self._cache.put(INDEX_KEY, json.dumps(known[-KEEP:]))


def _plain(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _entry(text: str | None) -> tuple[float, tuple[PythonPackage, ...]] | None:
    """(when, packages) of a remembered resolution; None when absent or unreadable."""
    if text is None:
        return None
    try:
        body = json.loads(text)
        packages = tuple(
            PythonPackage(
                name=str(p["name"]),
                version=str(p["version"]),
                hashes=tuple(str(h) for h in p["hashes"]),
                index=str(p.get("index", "")),
                url=str(p.get("url", "")),
            )
            for p in body["python"]
        )
        return float(body["at"]), packages
    except (ValueError, KeyError, TypeError):
        return None
