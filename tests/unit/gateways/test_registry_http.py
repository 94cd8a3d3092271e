"""The registry client's replies: bounded reads and sizes from HEAD (a fake registry on
127.0.0.1 serves a few fixed answers)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from envd import __version__
from envd.errors import EXIT_REGISTRY, RegistryError
from envd.gateways.registry import MAX_BODY, MAX_LISTING, RegistryClient, Repository

BIG = b"{" + b" " * MAX_BODY + b"}"  # one byte over MAX_BODY
BLOB = b"a small blob"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
HUGE_SIZE = 5 << 30  # what a HEAD says of a layer it does not send


class Registry(ThreadingHTTPServer):
    agents: list[str]


class Handler(BaseHTTPRequestHandler):
    server: Registry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, body: bytes, *, length: int | None = None) -> None:
        self.server.agents.append(self.headers.get("User-Agent", ""))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/manifests/big"):
            self._send(BIG)
        elif self.path.endswith(f"/blobs/{BLOB_DIGEST}"):
            self._send(BLOB)
        elif "/tags/list" in self.path:
            self._send(json.dumps({"tags": ["t"] * 15000}).encode())  # > MAX_BODY, < MAX_LISTING
        else:
            self.send_error(404)

    def do_HEAD(self) -> None:
        if self.path.endswith("/blobs/sha256:huge"):
            self._send(b"", length=HUGE_SIZE)
        else:
            self.send_error(404)


@pytest.fixture
def registry() -> Iterator[Registry]:
    server = Registry(("127.0.0.1", 0), Handler)
    server.agents = []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def repository(registry: Registry) -> Repository:
    return Repository(f"127.0.0.1:{registry.server_address[1]}", "team/x")


def test_a_manifest_over_the_limit_is_refused_naming_the_registry(repository: Repository) -> None:
    with pytest.raises(RegistryError) as info:
        RegistryClient().get_manifest(repository, "big")
    assert info.value.message == (
        f"{repository} sent more than {MAX_BODY} bytes for {repository.base_url}/manifests/big"
    )
    assert info.value.exit_code == EXIT_REGISTRY
    assert RegistryClient().get_manifest(repository, "big", limit=len(BIG)) is not None


def test_a_listing_may_be_larger_than_a_manifest(repository: Repository) -> None:
    assert len(json.dumps({"tags": ["t"] * 15000})) > MAX_BODY
    assert len(RegistryClient().tags(repository)) == 15000
    assert MAX_LISTING > MAX_BODY


def test_a_blob_head_gives_the_size_it_announces_without_a_body(repository: Repository) -> None:
    assert RegistryClient().blob_size(repository, "sha256:huge") == HUGE_SIZE
    assert RegistryClient().blob_size(repository, "sha256:absent") is None


def test_small_blobs_are_read_and_checked_and_requests_name_envd(
    registry: Registry, repository: Repository
) -> None:
    client = RegistryClient(purpose="share")
    assert client.get_blob(repository, BLOB_DIGEST) == BLOB
    with client.open_digest(repository, BLOB_DIGEST, len(BLOB)) as blob:
        assert blob.read() == BLOB
    assert registry.agents == [f"envd/{__version__}"] * 2
