"""The content hash of an image, from its layer bytes, with a per-layer cache by diff-id."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from envd.errors import NotFound, VerificationError
from envd.gateways.engine import Engine
from envd.gateways.files import write_atomic
from envd.model.content import (
    ContentError,
    LayerSummary,
    Manifest,
    content_hash,
    merge,
    summarise_layer,
    summary_from_json,
    summary_to_json,
)

# Bumped when merging changes what a chain of layers hashes to (2: the --init placeholder's
# mode), so a hash cached before is never read back.
_CHAINS = "chains-2"
# A merged manifest is the whole image's file list in objects (10-25 MiB resident for the
# default template's image): kept for the calls of one build or verify, then let go.
KEEP_IDLE_S = 10.0


class ContentHasher:
    """Reads an image's layers through the engine once; later calls merge cached summaries."""

    def __init__(
        self,
        engine: Engine,
        cache_dir: Path,
        keep: int = 1,
        keep_idle_s: float = KEEP_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache_dir = cache_dir
        self._keep = keep  # merged manifests kept in memory, by their chain of layers
        self._keep_idle_s = keep_idle_s  # ... until none has been asked for this long
        self._clock = clock
        self._used = clock()
        self._merged: OrderedDict[tuple[str, ...], Manifest] = OrderedDict()
        self._lock = threading.Lock()

    def shed(self) -> bool:
        """Let the kept manifests go once none was asked for in keep_idle_s (an idle daemon
        holds none); whether any was let go. The daemon's trimmer calls this every second."""
        with self._lock:
            if not self._merged or self._clock() - self._used < self._keep_idle_s:
                return False
            self._merged.clear()
            return True

    def image_manifest(self, image_ref: str) -> Manifest:
        image = self._engine.inspect_image(image_ref)
        if image is None:
            raise NotFound(f"image {image_ref} is not on the engine")
        with self._lock:
            self._used = self._clock()
            if (merged := self._merged.get(image.layers)) is not None:
                self._merged.move_to_end(image.layers)
                return merged
        manifest = self._read(image.id, image_ref, image.layers)
        with self._lock:
            self._used = self._clock()  # (reading it may have taken long)
            self._merged[image.layers] = manifest
            while len(self._merged) > self._keep:
                self._merged.popitem(last=False)
        return manifest

    def _read(self, image_id: str, image_ref: str, diff_ids: tuple[str, ...]) -> Manifest:
        summaries = {d: s for d in set(diff_ids) if (s := self._cached(d)) is not None}
        sizes = {size for d in summaries if (size := self._size(d)) is not None}
        # A compressed blob (the containerd store) is named by its own digest, not its diff-id.
        blobs = {blob for d in summaries if (blob := self._blob(d)) is not None}
        for attempt in range(2):
            if all(d in summaries for d in diff_ids):
                break
            saved = self._engine.read_image_layers(
                image_id,
                summarise_layer,
                skip=set(summaries) | blobs if attempt == 0 else set(summaries),
                skip_sizes=sizes if attempt == 0 else (),
            )
            if saved.diff_ids != diff_ids:
                raise VerificationError(
                    f"image {image_ref} changed while it was read: its layers differ"
                )
            for i, (diff_id, summary) in enumerate(zip(saved.diff_ids, saved.layers, strict=True)):
                if summary is not None and diff_id not in summaries:
                    self._store(diff_id, summary, saved.sizes[i] if saved.sizes else None)
                    summaries[diff_id] = summary
                if saved.blobs and saved.blobs[i] not in ("", diff_id):
                    self._store_blob(diff_id, saved.blobs[i])
        return merge(summaries[d] for d in diff_ids)

    def content_hash(self, image_ref: str) -> str:
        """The content hash; once known for a chain of layers, read back without merging."""
        image = self._engine.inspect_image(image_ref)
        if image is None:
            raise NotFound(f"image {image_ref} is not on the engine")
        chain = hashlib.sha256("\n".join((_CHAINS, *image.layers)).encode()).hexdigest()
        path = self._cache_dir / "chains" / f"{chain}.txt"
        try:
            known = path.read_text(encoding="utf-8").strip()
            if known.startswith("sha256:") and len(known) == 71:
                return known
        except FileNotFoundError:
            pass
        digest = content_hash(self.image_manifest(image.id))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, digest + "\n", mode=0o600)
        return digest

    # ------------------------------------------------------------ cache

    def has_summary(self, diff_id: str) -> bool:
        return self._path(diff_id).exists()

    def add_summary(self, diff_id: str, summary: LayerSummary) -> None:
        """A summary read from a layer's bytes elsewhere, whose sha256 was checked to be
        `diff_id` (the build cache reads layers from the registry as the engine pulls them)."""
        self._store(diff_id, summary)

    def _path(self, diff_id: str) -> Path:
        algorithm, _, hexdigest = diff_id.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not _is_hex(hexdigest):
            raise VerificationError(f"not a layer diff-id: {diff_id!r}")
        return self._cache_dir / f"{hexdigest}.json"

    def _cached(self, diff_id: str) -> LayerSummary | None:
        try:
            text = self._path(diff_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return summary_from_json(text)
        except ContentError:
            return None  # a damaged entry is read again from the layer bytes

    def _size(self, diff_id: str) -> int | None:
        """The size the layer had in the engine's archive (to know it there without reading)."""
        try:
            return int(self._path(diff_id).with_suffix(".size").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _blob(self, diff_id: str) -> str | None:
        """The digest the layer had compressed in the engine's archive, when it differs."""
        try:
            blob = self._path(diff_id).with_suffix(".blob").read_text().strip()
        except FileNotFoundError:
            return None
        return blob if blob.startswith("sha256:") and len(blob) == 71 else None

    def _store_blob(self, diff_id: str, blob: str) -> None:
        path = self._path(diff_id).with_suffix(".blob")
        if not path.exists():
            self._cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, f"{blob}\n", mode=0o600)

    def _store(self, diff_id: str, summary: LayerSummary, size: int | None = None) -> None:
        path = self._path(diff_id)
        self._cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, summary_to_json(summary), mode=0o600)
        if size is not None:
            write_atomic(path.with_suffix(".size"), f"{size}\n", mode=0o600)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
