"""The content hash of an image, from its layer bytes, with a per-layer cache by diff-id."""

from __future__ import annotations

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


class ContentHasher:
    """Reads an image's layers through the engine once; later calls merge cached summaries."""

    def __init__(self, engine: Engine, cache_dir: Path) -> None:
        self._engine = engine
        self._cache_dir = cache_dir

    def image_manifest(self, image_ref: str) -> Manifest:
        image = self._engine.inspect_image(image_ref)
        if image is None:
            raise NotFound(f"image {image_ref} is not on the engine")
        diff_ids = image.layers
        summaries = {d: s for d in set(diff_ids) if (s := self._cached(d)) is not None}
        if any(d not in summaries for d in diff_ids):
            saved = self._engine.read_image_layers(image.id, summarise_layer, skip=summaries)
            if saved.diff_ids != diff_ids:
                raise VerificationError(
                    f"image {image_ref} changed while it was read: its layers differ"
                )
            for diff_id, summary in zip(saved.diff_ids, saved.layers, strict=True):
                if summary is not None and diff_id not in summaries:
                    self._store(diff_id, summary)
                    summaries[diff_id] = summary
        return merge(summaries[d] for d in diff_ids)

    def content_hash(self, image_ref: str) -> str:
        return content_hash(self.image_manifest(image_ref))

    # ------------------------------------------------------------ cache

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

    def _store(self, diff_id: str, summary: LayerSummary) -> None:
        path = self._path(diff_id)
        self._cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, summary_to_json(summary), mode=0o600)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
