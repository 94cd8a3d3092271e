"""Debian's Contents index: which package has a file of a given name (for missing sonames).

`dists/SUITE/main/Contents-ARCH.gz` (bookworm amd64: 12 MB) is downloaded once per mirror,
suite and architecture into the cache (complete or not at all: gateways.urls) and read as a
stream: memory stays small however large the index is.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable
from pathlib import Path

from envd.gateways import urls
from envd.model.apt import contents_packages

MAX_BYTES = 256 * 1024 * 1024  # the compressed index (bookworm main amd64: 12 MB)


def lookup(
    mirror: str, suite: str, arch: str, sonames: Iterable[str], cache: Path
) -> dict[str, str]:
    """soname -> Debian package, from the suite's Contents index (downloaded when not cached).

    Raises urls.UrlUnreachable when the index cannot be fetched."""
    wanted = sorted(set(sonames))
    if not wanted:
        return {}
    url = f"{mirror.rstrip('/')}/dists/{suite}/main/Contents-{arch}.gz"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = cache / f"Contents-{suite}-{arch}-{key}.gz"
    if not path.is_file():
        urls.fetch(
            url,
            path,
            what=f"Debian's Contents index of {suite}",
            hint="check the network, or add the packages that provide them to `system:`",
            limit=MAX_BYTES,
        )
    try:
        with gzip.open(path, "rb") as lines:
            return contents_packages(lines, wanted)
    except (OSError, EOFError, zlib.error):
        path.unlink(missing_ok=True)  # (damaged: fetched again next time)
        return {}
