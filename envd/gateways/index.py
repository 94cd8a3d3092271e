"""Package index pages (PEP 691 JSON, else PEP 503 HTML): the files of a project, by sha256.

The one module that reads a package index over HTTP itself (uv resolves; this only lists the
artifacts a lock already pins, for `envctl export pylock`). HTTPS trusts the host's CA bundle
(envd.gateways.http), so it works behind a TLS-intercepting proxy; every request has a
timeout and every page is read up to a size limit.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from envd.errors import LockError
from envd.gateways import http
from envd.model.pylock import ArtifactFile, files_from_simple_json

SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
ACCEPT = f"{SIMPLE_JSON}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
PAGE_MAX_BYTES = 64 * 1024 * 1024  # numpy's JSON page is a few MiB
TIMEOUT_S = 60.0
WORKERS = 8


class IndexPages:
    """Reads projects' file lists from package indexes."""

    def __init__(
        self, *, timeout: float = TIMEOUT_S, limit: int = PAGE_MAX_BYTES, workers: int = WORKERS
    ) -> None:
        self._timeout = timeout
        self._limit = limit
        self._workers = workers

    def files(self, index: str, name: str) -> tuple[ArtifactFile, ...]:
        """Every file of project `name` on `index` (a simple API root URL) that has a sha256."""
        url = f"{index.rstrip('/')}/{name}/"
        if urlsplit(url).scheme not in ("http", "https"):
            raise LockError(f"not an http(s) package index: {index}")
        try:
            with http.open_url(url, timeout=self._timeout, headers={"Accept": ACCEPT}) as response:
                body = http.read_bounded(response, self._limit)
                final = response.geturl()
                kind = response.headers.get_content_type()
        except http.BodyTooLarge:
            raise LockError(f"{url}: the index page is larger than {self._limit} bytes") from None
        except urllib.error.HTTPError as exc:
            exc.close()
            raise LockError(
                f"package index {index} answered {exc.code} for {name}",
                hint="check that the index in envd.lock is still reachable and has the project",
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LockError(
                f"package index {index} cannot be reached: {reason}",
                hint="check the network; behind a TLS-intercepting proxy set SSL_CERT_FILE "
                "to its CA bundle",
            ) from None
        if kind == SIMPLE_JSON or kind.endswith("+json") or kind == "application/json":
            try:
                page = json.loads(body)
            except ValueError as exc:
                raise LockError(f"{url}: not a PEP 691 JSON page ({exc})") from None
            if not isinstance(page, dict):
                raise LockError(f"{url}: not a PEP 691 JSON page")
            return files_from_simple_json(page, final)
        return files_from_simple_html(body.decode("utf-8", "replace"), final)

    def files_of(self, wanted: Iterable[tuple[str, str]]) -> tuple[ArtifactFile, ...]:
        """The files of every (index, name), fetched in parallel; the order is the input's."""
        pairs = list(dict.fromkeys(wanted))
        with ThreadPoolExecutor(max_workers=max(1, min(self._workers, len(pairs)))) as pool:
            pages = list(pool.map(lambda pair: self.files(*pair), pairs))
        return tuple(f for page in pages for f in page)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def files_from_simple_html(text: str, page_url: str) -> tuple[ArtifactFile, ...]:
    """The files of a PEP 503 HTML project page whose links carry `#sha256=`."""
    parser = _Anchors()
    parser.feed(text)
    out = []
    for href in parser.hrefs:
        url, _, fragment = urljoin(page_url, href).partition("#")
        algorithm, _, digest = fragment.partition("=")
        if algorithm == "sha256" and len(digest) == 64:
            out.append(ArtifactFile(url=url, sha256=digest.lower()))
    return tuple(out)
