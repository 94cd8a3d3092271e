"""The build tables: cached steps, images envd made, and image fingerprints."""

from __future__ import annotations

import time

from envd.gateways.store.database import Database
from envd.gateways.store.rows import ImageRow


class ImagesMixin(Database):
    def step_image(self, cache_key: str) -> str | None:
        rows = self._query("SELECT image_id FROM steps WHERE cache_key=?", (cache_key,))
        return str(rows[0][0]) if rows else None

    def record_step(self, cache_key: str, parent: str, name: str, image_id: str, size: int) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cache_key, parent, name, image_id, size, now, now),
            )

    def touch_steps(self, keys: list[str]) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE steps SET last_used_at=? WHERE cache_key=?",
                [(time.time(), k) for k in keys],
            )

    def drop_step(self, cache_key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM steps WHERE cache_key=?", (cache_key,))

    def steps(self) -> list[tuple[str, str, str, int, float]]:
        """(cache_key, name, image_id, size_bytes, last_used_at) of every recorded step."""
        rows = self._query("SELECT cache_key, name, image_id, size_bytes, last_used_at FROM steps")
        return [(str(k), str(n), str(i), int(s), float(t)) for k, n, i, s, t in rows]  # type: ignore[call-overload, arg-type]

    _IMAGE_COLUMNS = (
        "image, image_id, project, kind, cache_key, lock_hash, size_bytes, created_at, last_used_at"
    )

    def record_image(
        self,
        image: str,
        image_id: str,
        project: str,
        kind: str,
        cache_key: str,
        lock_hash: str,
        size: int,
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO images ({self._IMAGE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image, image_id, project, kind, cache_key, lock_hash, size, now, now),
            )

    def image(self, image: str) -> ImageRow | None:
        rows = self._query(f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE image=?", (image,))
        return ImageRow(*rows[0]) if rows else None  # type: ignore[arg-type]

    def images(self) -> list[ImageRow]:
        rows = self._query(f"SELECT {self._IMAGE_COLUMNS} FROM images ORDER BY last_used_at")
        return [ImageRow(*r) for r in rows]  # type: ignore[arg-type]

    def touch_image(self, image: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE images SET last_used_at=? WHERE image=?", (time.time(), image))

    def drop_image(self, image: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM images WHERE image=?", (image,))

    # ------------------------------------------------------------ fingerprints

    def record_fingerprint(self, image_id: str, document: str, environment_hash: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
                (image_id, document, environment_hash, time.time()),
            )

    def fingerprint_document(self, image_id: str) -> str | None:
        rows = self._query("SELECT document FROM fingerprints WHERE image_id=?", (image_id,))
        return str(rows[0][0]) if rows else None

    def environment_hash(self, image_id: str) -> str:
        """The recorded environment hash of an image; "" when none is recorded."""
        rows = self._query(
            "SELECT environment_hash FROM fingerprints WHERE image_id=?", (image_id,)
        )
        return str(rows[0][0]) if rows else ""
