"""A step's new layer summarised from what its container changed, before it is committed.

The engine lists the paths a container changed and gives the tar of any path (its archive
API); the files of those paths are the files of the layer the commit makes. Reading only them
costs the size of the new layer, where reading the layer from `docker save` streams the whole
image. The summary is the one `summarise_layer` gives for the layer's tar, up to folders the
layer carries unchanged (which merge to the same manifest): the same entries, modes, owners,
sizes, sha256s, link targets and facts, read by the same code. Where it could differ, there is
no summary (None) and the layer is read from its bytes as before: a deletion (whiteouts and
opaque folders are not in the archive), a mount inside what would be read (the archive shows
the mounted files), a changed path the archive does not show, a hard link to a file outside
the layer, or too many separate paths.

Pure: the only I/O is reading the streams `open_archive` returns.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from envd.model.content import (
    MAX_ENTRIES_PER_LAYER,
    MAX_FACT_BYTES_PER_LAYER,
    BoundedTarInfo,
    ContentError,
    Entry,
    Fact,
    LayerSummary,
    normalise,
    parse_fact,
    path_bytes,
    read_entry,
)

MODIFIED, ADDED, DELETED = 0, 1, 2  # the engine's change kinds
MAX_ROOTS = 64  # separate paths read through the archive API (one request each)
# A changed folder with this many changed paths right in it is read whole (what it had before
# comes too, and is left out); one with fewer gives its own entry, its changed paths their own.
WHOLE_FOLDER = 8


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def archive_roots(
    changes: Iterable[tuple[str, int]], mounts: Sequence[str] = ()
) -> list[tuple[str, bool]] | None:
    """The paths to read through the archive API, each with whether it is read whole (an
    added path, or a folder with many changes) or only its own entry (the first member);
    None when the layer must be read from its bytes (see the module's docstring)."""
    kinds: dict[str, int] = {}
    for path, kind in changes:
        if kind not in (MODIFIED, ADDED):
            return None
        kinds[normalise(path)] = kind
    in_folder = Counter(posixpath.dirname(p) for p in kinds)
    roots: list[tuple[str, bool]] = []
    whole: set[str] = set()
    for path in sorted(kinds, key=path_bytes):
        parts = path.split("/")
        if any("/".join(parts[:i]) in whole for i in range(2, len(parts))):
            continue  # (in a folder read whole)
        if path == "/":
            return None
        read_whole = kinds[path] == ADDED or in_folder[path] >= WHOLE_FOLDER
        roots.append((path, read_whole))
        if read_whole:
            whole.add(path)
    if len(roots) > MAX_ROOTS:
        return None
    for mount in mounts:
        for root, read_whole in roots:
            if _under(root, mount) or (read_whole and _under(mount, root)):
                return None
    return roots


def summarise_changes(
    changes: Sequence[tuple[str, int]],
    open_archive: Callable[[str], IO[bytes]],
    mounts: Sequence[str] = (),
) -> LayerSummary | None:
    """The summary of the layer a commit of the container makes, from the files it changed
    (only those: a changed folder's archive also holds its unchanged files, left out)."""
    roots = archive_roots(changes, mounts)
    if roots is None:
        return None
    changed = {normalise(p) for p, _ in changes}
    entries: dict[str, Entry] = {}
    facts: dict[str, Fact] = {}
    fact_bytes = 0
    for root, read_whole in roots:
        parent = posixpath.dirname(root)
        try:
            with (
                open_archive(root) as stream,
                tarfile.open(
                    fileobj=stream,
                    mode="r|",
                    encoding="utf-8",
                    errors="surrogateescape",
                    tarinfo=BoundedTarInfo,
                ) as tar,
            ):
                for info in tar:
                    path = normalise(posixpath.join(parent, info.name))
                    if not read_whole and path != root:
                        break  # (its own entry comes first)
                    if path not in changed:
                        continue  # (a file the folder had before)
                    if len(entries) >= MAX_ENTRIES_PER_LAYER:
                        raise ContentError(
                            f"a layer with more than {MAX_ENTRIES_PER_LAYER} entries"
                        )
                    if info.islnk():  # (named like the members: from the root's folder)
                        info.linkname = posixpath.join(parent, info.linkname)
                    entry, data = read_entry(tar, info, path, MAX_FACT_BYTES_PER_LAYER - fact_bytes)
                    if entry.kind == "hardlink" and entry.target not in entries:
                        return None  # (its file is outside the layer, or read later)
                    entries.pop(path, None)
                    entries[path] = entry
                    facts.pop(path, None)
                    if data is not None:
                        fact_bytes += len(data)
                        fact = parse_fact(path, data)
                        if fact is not None:
                            facts[path] = fact
        except tarfile.TarError as exc:
            raise ContentError(f"not a readable archive of {root}: {exc}") from exc
    if changed - entries.keys():
        return None  # (a socket, or a path gone from the container)
    return LayerSummary(entries, frozenset(), frozenset(), facts)
