"""A fake project volume behind the interface of envd.gateways.engine_files.EngineFiles."""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from envd.gateways.engine_files import Outgoing
from envd.model.projectsync import FILE, LINK, Listing, Stat


@dataclass
class Item:
    data: bytes = b""
    mode: int = 0o644
    mtime_ns: int = 0
    target: str = ""  # a link's
    owner: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        return LINK if self.target else FILE


@dataclass
class FakeVolume:
    """The volume's files (relative path -> Item), and every call made to it by name."""

    files: dict[str, Item] = field(default_factory=dict)
    created: str = "2026-12-01T00:00:00Z"
    calls: list[str] = field(default_factory=list)
    written: list[list[str]] = field(default_factory=list)
    owned_by: tuple[int, int] | None = None
    hashing: bool = True  # False: like an image without sha256sum
    hidden: frozenset[str] = frozenset()  # left out of listings, which then are incomplete
    _clock: Any = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------ what a command in the container does

    def edit(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.files[path] = Item(data, mode, self._tick())

    def touch(self, path: str) -> None:
        self.files[path].mtime_ns = self._tick()

    def link(self, path: str, target: str) -> None:
        self.files[path] = Item(target=target, mtime_ns=self._tick())

    def _tick(self) -> int:
        return 1_900_000_000 * 10**9 + next(self._clock) * 1_234_567

    def text(self, path: str) -> str:
        return self.files[path].data.decode()

    # ------------------------------------------------ the gateway's interface

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> str:
        self.calls.append("ensure_volume")
        return self.created

    def listing(self, container: str, workdir: str) -> Listing:
        self.calls.append("listing")
        files = {
            p: Stat(i.kind, len(i.data), i.mtime_ns, 0o777 if i.target else i.mode, i.target)
            for p, i in self.files.items()
            if p not in self.hidden
        }
        return Listing(files, not self.hidden, "find ended with status 1" if self.hidden else "")

    def hashes(self, container: str, workdir: str, paths: Sequence[str]) -> dict[str, str]:
        self.calls.append("hashes")
        if not self.hashing:
            return {}
        return {p: hashlib.sha256(self.files[p].data).hexdigest() for p in paths}

    def read(
        self,
        container: str,
        workdir: str,
        groups: Iterable[tuple[str, frozenset[str]]],
        on_member: Callable[[str, tarfile.TarInfo, IO[bytes] | None], None],
        on_bytes: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.calls.append("read")
        for _, wanted in groups:
            for path in sorted(wanted):
                item = self.files.get(path)
                if item is None:
                    continue
                info = tarfile.TarInfo(path)
                info.mode, info.size, info.mtime = item.mode, len(item.data), item.mtime_ns // 10**9
                if item.target:
                    info.type, info.linkname = tarfile.SYMTYPE, item.target
                    on_member(path, info, None)
                else:
                    on_member(path, info, io.BytesIO(item.data))

    def write(
        self,
        container: str,
        workdir: str,
        files: Sequence[Outgoing],
        uid: int,
        gid: int,
        on_bytes: Callable[[str, int, int], None] | None = None,
    ) -> dict[str, tuple[int, int]]:
        self.calls.append("write")
        self.written.append([f.relpath for f in files])
        out = {}
        for f in files:
            mtime = f.stat.mtime_ns // 10**9 * 10**9
            if f.stat.kind == LINK:
                self.files[f.relpath] = Item(target=f.stat.target, mtime_ns=mtime, owner=(uid, gid))
                continue
            with open(f.host_path, "rb") as source:
                data = source.read()
            if on_bytes is not None:
                on_bytes(f.relpath, len(data), len(data))
            self.files[f.relpath] = Item(data, f.stat.mode, mtime, owner=(uid, gid))
            out[f.relpath] = (len(data), mtime)
        return out

    def remove(self, container: str, workdir: str, paths: Sequence[str]) -> None:
        self.calls.append("remove")
        for p in paths:
            self.files.pop(p, None)

    def own_workdir(self, container: str, workdir: str, uid: int, gid: int) -> None:
        self.calls.append("own_workdir")
        self.owned_by = (uid, gid)
