"""Direct URL files: downloads one file over http(s), streamed, size-bounded, by sha256.

The one module that fetches a direct URL requirement's file (`name @ https://.../x.whl`).
The file goes to a temporary name next to its destination while its sha256 is computed, and
is renamed into place only when complete (and, when a digest is expected, only when it
matches): a cache never holds a partial or unverified file. HTTPS trusts the host's CA bundle
(envd.gateways.http).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from envd.errors import RegistryError, VerificationError
from envd.gateways import http

MAX_BYTES = 4 * 1024 * 1024 * 1024  # the largest wheels (torch with CUDA) are ~2.5 GiB
TIMEOUT_S = 60.0  # per connection and per read, not for the whole file


class UrlUnreachable(RegistryError):
    """A direct URL could not be downloaded (refused, not found, timed out, too large)."""


class UrlDigestMismatch(VerificationError):
    """A direct URL's bytes do not have the sha256 they must have."""


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str  # hex
    size: int


def fetch(
    url: str,
    dest: Path,
    *,
    what: str,
    hint: str,
    expected: tuple[str, ...] = (),
    limit: int = MAX_BYTES,
    timeout: float = TIMEOUT_S,
) -> Fetched:
    """Download `url` to `dest`; `what` names it in errors (the requirement and where it is
    written), `hint` says how to fix an unreachable URL. With `expected`, the file's sha256
    must be one of them, else UrlDigestMismatch naming both and nothing is kept."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise UrlUnreachable(f"{what}: not an http(s) URL: {url}", hint=hint)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
    partial = Path(partial_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with http.open_url(url, timeout=timeout) as response:
                    for chunk in http.chunks(response, limit):
                        size += len(chunk)
                        digest.update(chunk)
                        out.write(chunk)
            except http.BodyTooLarge as exc:
                if exc.declared is not None:
                    raise UrlUnreachable(
                        f"{what}: {url} is {exc.declared} bytes, more than envd downloads "
                        f"for one file ({limit} bytes)",
                        hint=hint,
                    ) from None
                raise UrlUnreachable(
                    f"{what}: {url} is larger than {limit} bytes, more than envd "
                    "downloads for one file",
                    hint=hint,
                ) from None
            except urllib.error.HTTPError as exc:
                exc.close()
                raise UrlUnreachable(
                    f"{what}: the direct URL {url} answered HTTP {exc.code} ({exc.reason}); "
                    "it is a URL, not a package index, so envd has nowhere else to look",
                    hint=hint,
                ) from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise UrlUnreachable(
                    f"{what}: the direct URL {url} cannot be reached ({reason}); it is a URL, "
                    "not a package index, so envd has nowhere else to look",
                    hint=hint,
                ) from None
        actual = digest.hexdigest()
        if expected and actual not in expected:
            raise UrlDigestMismatch(
                f"{what}: {url} has sha256 {actual}, but {expected[0]} is required"
                + (f" (or one of {len(expected) - 1} more)" if len(expected) > 1 else ""),
                hint="the file at the URL changed, or the digest is wrong: if the new file is "
                "the one you want, put its sha256 in the requirement and lock again",
            )
        os.chmod(partial, 0o644)
        os.replace(partial, dest)
        return Fetched(dest, actual, size)
    finally:
        partial.unlink(missing_ok=True)
