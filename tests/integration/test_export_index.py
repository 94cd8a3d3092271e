"""envd.gateways.index against a local package index (PEP 691 JSON and PEP 503 HTML pages)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from envd.errors import LockError
from envd.gateways.index import SIMPLE_JSON, IndexPages

pytestmark = pytest.mark.integration

A, B = "a" * 64, "b" * 64
PAGES: dict[str, tuple[str, bytes]] = {
    "/simple/six/": (
        SIMPLE_JSON,
        json.dumps(
            {
                "meta": {"api-version": "1.1"},
                "name": "six",
                "files": [
                    {
                        "filename": "six-1.16.0-py2.py3-none-any.whl",
                        "url": "../../files/six-1.16.0-py2.py3-none-any.whl",
                        "hashes": {"sha256": A},
                        "size": 11053,
                    },
                    {"filename": "six-1.0.tar.gz", "url": "/files/six-1.0.tar.gz", "hashes": {}},
                ],
            }
        ).encode(),
    ),
    "/simple/idna/": (
        "text/html",
        f'<html><body><a href="/files/idna-3.7-py3-none-any.whl#sha256={B}">idna</a>'
        '<a href="/files/idna-3.6.tar.gz#md5=00">old</a></body></html>'.encode(),
    ),
    "/simple/big/": (SIMPLE_JSON, b'{"files": []}' + b" " * 5000),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path not in PAGES:
            self.send_error(404)
            return
        kind, body = PAGES[self.path]
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def index() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()
    server.server_close()


def test_json_and_html_pages_give_urls_and_hashes(index: str) -> None:
    pages = IndexPages()
    (six,) = pages.files(index, "six")
    root = index.removesuffix("/simple")
    assert six.url == f"{root}/files/six-1.16.0-py2.py3-none-any.whl"
    assert (six.sha256, six.size) == (A, 11053)
    (idna,) = pages.files(index + "/", "idna")
    assert (idna.url, idna.sha256) == (f"{root}/files/idna-3.7-py3-none-any.whl", B)
    both = pages.files_of([(index, "six"), (index, "idna"), (index, "six")])
    assert [f.sha256 for f in both] == [A, B]


def test_missing_projects_large_pages_and_dead_indexes_are_lock_errors(index: str) -> None:
    with pytest.raises(LockError, match="answered 404 for nope"):
        IndexPages().files(index, "nope")
    with pytest.raises(LockError, match="larger than 1000 bytes"):
        IndexPages(limit=1000).files(index, "big")
    with pytest.raises(LockError, match="cannot be reached"):
        IndexPages(timeout=5).files("http://127.0.0.1:9/simple", "six")
