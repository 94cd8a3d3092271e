"""Run files kept by content (`$ENVD_HOME/runfiles/sha256/<hex>`), so a run stays shareable
after a later run overwrote its outputs.

A kept file is a copy made while hashing it (never a hard link: the code that writes an
output usually rewrites it in place, which would change the kept bytes too), written to a
temporary name and moved into place only when its bytes are the recorded digest. Files are
read from the project one folder at a time without following links (`files.open_beneath`).
The store is bounded: past `max_bytes`, the files kept longest ago go first; `envctl gc`
removes the files no recorded run names, and holds the rest to its storage budget.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Set
from pathlib import Path
from typing import BinaryIO

from envd.gateways.files import open_beneath
from envd.model.runrecord import SHA256_RE
from envd.model.safenames import UnsafeName, relative

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 << 30
# A file kept this recently may belong to a run whose record is still being written.
GRACE_S = 3600.0
_BLOCK = 1 << 20


class KeptFiles:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._root = root
        self._max = max_bytes

    def path(self, digest: str) -> Path:
        if not SHA256_RE.match(digest):
            raise ValueError(f"{digest!r} is not a sha256 hex digest")
        return self._root / "sha256" / digest

    def has(self, digest: str) -> bool:
        return SHA256_RE.match(digest) is not None and self.path(digest).is_file()

    def open(self, digest: str) -> BinaryIO | None:
        """The kept file with these bytes (the caller checks them), or None."""
        try:
            return open(self.path(digest), "rb")
        except (OSError, ValueError):
            return None

    def keep(self, project_dir: str, files: Mapping[str, str]) -> list[str]:
        """Keep each project file {relpath: sha256} whose bytes are still that digest; the
        paths not kept (changed since hashed, unreadable, a link)."""
        missed: list[str] = []
        for rel, digest in sorted(files.items()):
            if not SHA256_RE.match(digest):
                continue  # a symlink is recorded by target, not kept
            target = self.path(digest)
            if target.is_file():
                try:
                    os.utime(target)  # kept recently: the last to go
                except OSError:
                    pass
                continue
            if not self._copy(project_dir, rel, digest, target):
                missed.append(rel)
        self._trim()
        return missed

    def _copy(self, project_dir: str, rel: str, digest: str, target: Path) -> bool:
        try:
            fd = open_beneath(project_dir, relative(rel, "a run file"))
        except (OSError, ValueError, UnsafeName):
            return False
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".keep-", delete=False)  # noqa: SIM115
        try:
            sha = hashlib.sha256()
            with os.fdopen(fd, "rb") as source, tmp:
                for block in iter(lambda: source.read(_BLOCK), b""):
                    sha.update(block)
                    tmp.write(block)
            if sha.hexdigest() != digest:
                return False
            os.chmod(tmp.name, 0o400)
            os.replace(tmp.name, target)
            return True
        except OSError as exc:
            log.warning("run file %s not kept: %s", rel, exc)
            return False
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)

    def collect(
        self, referenced: Set[str], budget: int | None, dry_run: bool = False
    ) -> list[tuple[str, int]]:
        """Remove (unless `dry_run`) each kept file no recorded run names (`referenced`:
        hex digests) and, while the rest exceeds `budget` bytes (None: no budget), the
        others kept longest ago. Files kept within GRACE_S are left alone. Returns what
        goes: (hex digest, size)."""
        now = time.time()
        entries = self._entries()
        unreferenced = [e for e in entries if e[2] not in referenced and now - e[0] > GRACE_S]
        chosen = {e[2] for e in unreferenced}
        total = sum(size for _, size, digest in entries if digest not in chosen)
        for mtime, size, digest in entries:
            if budget is None or total <= budget:
                break
            if digest not in chosen and now - mtime > GRACE_S:
                chosen.add(digest)
                total -= size
        gone: list[tuple[str, int]] = []
        for _, size, digest in entries:
            if digest in chosen and (dry_run or self._unlink(self.path(digest))):
                gone.append((digest, size))
        return gone

    def _entries(self) -> list[tuple[float, int, str]]:
        """(mtime, size, hex digest) of each kept file, the longest kept first."""
        found: list[tuple[float, int, str]] = []
        try:
            scan = list(os.scandir(self._root / "sha256"))
        except OSError:
            return []
        for entry in scan:
            if SHA256_RE.match(entry.name) is None:
                continue  # a temporary file being kept
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            found.append((info.st_mtime, info.st_size, entry.name))
        return sorted(found)

    @staticmethod
    def _unlink(path: Path) -> bool:
        try:
            os.unlink(path)
            return True
        except OSError:
            return False

    def _trim(self) -> None:
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for _, size, digest in entries:
            if total <= self._max:
                break
            if self._unlink(self.path(digest)):
                total -= size
