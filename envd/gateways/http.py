"""HTTP for the gateways that read a server (package indexes, direct URLs, registries, MLflow).

One TLS context (the host's CA bundle, envd.gateways.trust, so https works behind a
TLS-intercepting proxy), one way to open a URL (always with a timeout), and two bounded ways to
read a reply: whole (`read_bounded`) or streamed (`chunks`). Nothing here knows a caller's
errors: urllib's errors and BodyTooLarge go up, and each gateway says what they mean to it.
"""

from __future__ import annotations

import os
import ssl
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from envd import __version__
from envd.errors import RegistryError
from envd.gateways.trust import host_ca_bundle

USER_AGENT = f"envd/{__version__}"
CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, amount: int = ..., /) -> bytes: ...


class BodyTooLarge(RegistryError):
    """A reply is larger than its reader allows. `declared` is the size the server announced
    (Content-Length) when that alone refused it, else None (the bytes themselves did)."""

    def __init__(self, limit: int, declared: int | None = None) -> None:
        shown = f"{declared} bytes" if declared is not None else f"more than {limit} bytes"
        super().__init__(f"a reply of {shown} is over the limit of {limit} bytes")
        self.limit = limit
        self.declared = declared


_contexts: dict[tuple[str | None, int, int, int], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """A client TLS context that trusts the host's CA bundle (SSL_CERT_FILE,
    REQUESTS_CA_BUNDLE, PIP_CERT, else the system bundle; Python's defaults when there is
    none). The bundle is looked up on every call; a context is made once per bundle file
    and version (loading one costs tens of milliseconds), and shared: never change it."""
    cafile = host_ca_bundle()
    try:
        stat = os.stat(cafile) if cafile else None
    except OSError:
        stat = None
    key = (cafile, stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat else (cafile, 0, 0, 0)
    with _contexts_lock:
        context = _contexts.get(key)
        if context is None:
            context = ssl.create_default_context(cafile=cafile)
            _contexts.clear()  # only the current bundle is ever wanted again
            _contexts[key] = context
        return context


def make_opener(*, proxies: bool = True) -> urllib.request.OpenerDirector:
    """A urllib opener whose https trusts the host's CA bundle; `proxies=False` ignores the
    proxy environment (for servers on this machine)."""
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.HTTPSHandler(context=ssl_context())
    ]
    if not proxies:
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def open_url(
    url_or_request: str | urllib.request.Request,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    opener: urllib.request.OpenerDirector | None = None,
) -> Any:
    """The response to a GET of a URL, or to a prepared request (its method and body), with
    `headers` added (User-Agent envd/VERSION unless given). https trusts the host's CA
    bundle, unless `opener` (see `make_opener`) is given. urllib's errors go up as they are:
    HTTPError for an error status, URLError, TimeoutError or OSError for no answer,
    ValueError for a URL it cannot open. Use the response as a context manager."""
    if isinstance(url_or_request, urllib.request.Request):
        request = url_or_request
    else:
        request = urllib.request.Request(url_or_request)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if not request.has_header("User-agent"):
        request.add_header("User-Agent", USER_AGENT)
    if opener is not None:
        return opener.open(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout, context=ssl_context())


def read_bounded(response: Readable, limit: int) -> bytes:
    """The whole body of `response`, at most `limit` bytes; BodyTooLarge when there is more.
    Never reads more than limit + 1 bytes."""
    body = response.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(limit)
    return body


def chunks(response: Any, limit: int, size: int = CHUNK) -> Iterator[bytes]:
    """The body of `response` in blocks of at most `size` bytes; BodyTooLarge before the
    first block when its Content-Length is over `limit`, else as soon as more than `limit`
    bytes came (the block that crosses the limit is not yielded)."""
    declared = _content_length(response)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit, declared)
    total = 0
    while block := response.read(min(size, limit + 1 - total)):
        total += len(block)
        if total > limit:
            raise BodyTooLarge(limit)
        yield block


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    return int(value) if value and value.isdigit() else None
