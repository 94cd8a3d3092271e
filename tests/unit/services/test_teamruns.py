"""`runs --from` reads a registry's fallback index: a digest in it is the registry's word, and
never becomes a path or a reference unless it is a sha256 digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from envd.services.teamruns import TeamRuns


class _Registry:
    """A registry whose fallback index names a path where a digest belongs."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def tags(self, repository: Any) -> list[str]:
        return ["sha256-" + "a" * 64]

    def get_manifest(self, repository: Any, reference: str, limit: int) -> tuple[bytes, str]:
        self.asked.append(reference)
        index = {"manifests": [{"digest": "../../../../../dev/zero"}, {"digest": "sha256:x"}]}
        return json.dumps(index).encode(), "sha256:" + "b" * 64


def test_a_digest_that_is_no_digest_is_neither_read_nor_asked_for(tmp_path: Path) -> None:
    registry = _Registry()
    team = TeamRuns(registry, tmp_path / "cache")  # type: ignore[arg-type]

    listed, read = team.list_shared("127.0.0.1:5000/team/p")

    assert listed == [] and read == 0
    assert registry.asked == ["sha256-" + "a" * 64]  # the index only, nothing it named
    assert team._cached("../../../../../dev/zero") is None
