"""The states a registered project can be in (one enum; envd.services.projects owns changes)."""

from __future__ import annotations

from enum import StrEnum


class ProjectState(StrEnum):
    NEW = "new"  # registered, nothing built yet
    READY = "ready"  # the image matches envd.lock
    STALE = "stale"  # envd.yaml or envd.lock moved on: lock or build needed
    BUILDING = "building"
    INVALID = "invalid"  # envd.yaml does not parse
    MISSING = "missing"  # the project's directory is gone
    FAILED = "failed"  # the last build failed

    @classmethod
    def parse(cls, text: str) -> ProjectState:
        """A stored state; an unknown word (a newer envd's) reads as STALE."""
        try:
            return cls(text)
        except ValueError:
            return cls.STALE
