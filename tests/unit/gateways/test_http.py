"""envd.gateways.http: bounded reads, the CA bundle's TLS context, envd's requests (a local
http.server on 127.0.0.1, in plain http and in https with a certificate made for the test)."""

from __future__ import annotations

import io
import shutil
import ssl
import subprocess
import threading
import urllib.error
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from envd import __version__
from envd.errors import EXIT_REGISTRY
from envd.gateways import http


class Server(ThreadingHTTPServer):
    body = b""
    chunked = False
    seen: list[dict[str, str]]


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))
        if self.path == "/missing":
            self.send_error(404)
            return
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.server.chunked:  # no Content-Length: only the bytes can say how large it is
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 1000):
                part = body[start : start + 1000]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


def start(context: ssl.SSLContext | None = None) -> Server:
    server = Server(("127.0.0.1", 0), Handler)
    server.seen = []
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def url(server: Server, path: str = "/", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.server_address[1]}{path}"


@pytest.fixture
def served() -> Iterator[Server]:
    server = start()
    yield server
    server.shutdown()
    server.server_close()


class Counted(io.BytesIO):
    """A response body that counts the bytes handed out, with the given headers."""

    def __init__(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        super().__init__(body)
        self.given = 0
        self.headers = Message()
        for name, value in (headers or {}).items():
            self.headers[name] = value

    def read(self, amount: int | None = -1, /) -> bytes:
        data = super().read(amount)
        self.given += len(data)
        return data


# ---------------------------------------------------------------- bounded reads


def test_read_bounded_gives_a_body_up_to_the_limit_and_refuses_one_byte_more() -> None:
    assert http.read_bounded(Counted(b"x" * 100), 100) == b"x" * 100
    body = Counted(b"x" * 10_000_000)
    with pytest.raises(http.BodyTooLarge) as info:
        http.read_bounded(body, 100)
    assert body.given == 101  # never more than limit + 1
    assert "over the limit of 100 bytes" in info.value.message
    assert info.value.exit_code == EXIT_REGISTRY and info.value.declared is None


@pytest.mark.parametrize("chunked", [False, True])
def test_read_bounded_over_the_wire(served: Server, chunked: bool) -> None:
    served.chunked = chunked
    served.body = b"y" * 5000
    with http.open_url(url(served), timeout=5) as response:
        assert http.read_bounded(response, 5000) == served.body
    with http.open_url(url(served), timeout=5) as response, pytest.raises(http.BodyTooLarge):
        http.read_bounded(response, 4999)


def test_chunks_stream_the_body_in_blocks_of_the_size_asked() -> None:
    body = bytes(range(256)) * 40
    blocks = list(http.chunks(Counted(body), 10_240, size=1000))
    assert b"".join(blocks) == body
    assert max(len(b) for b in blocks) == 1000


def test_chunks_refuse_more_than_the_limit_and_read_no_further() -> None:
    body = Counted(b"z" * 10_000_000)
    got = b""
    with pytest.raises(http.BodyTooLarge) as info:
        for block in http.chunks(body, 2500, size=1000):
            got += block
    assert got == b"z" * 2000  # the block that crosses the limit is not given
    assert body.given == 2501
    assert info.value.declared is None


def test_chunks_refuse_a_declared_length_over_the_limit_before_reading() -> None:
    body = Counted(b"z" * 5000, {"Content-Length": "5000"})
    with pytest.raises(http.BodyTooLarge) as info:
        next(http.chunks(body, 4096))
    assert (info.value.declared, info.value.limit, body.given) == (5000, 4096, 0)
    assert "5000 bytes" in info.value.message


@pytest.mark.parametrize("chunked", [False, True])
def test_chunks_over_the_wire(served: Server, chunked: bool) -> None:
    served.chunked = chunked
    served.body = b"w" * 300_000
    with http.open_url(url(served), timeout=5) as response:
        assert b"".join(http.chunks(response, 300_000, size=65536)) == served.body
    with http.open_url(url(served), timeout=5) as response, pytest.raises(http.BodyTooLarge):
        b"".join(http.chunks(response, 299_999))


# ---------------------------------------------------------------- requests


def test_requests_say_they_are_envd_and_carry_the_headers_given(served: Server) -> None:
    with http.open_url(url(served), timeout=5, headers={"Accept": "application/json"}):
        pass
    with http.open_url(url(served), timeout=5, headers={"User-Agent": "other/1"}):
        pass
    assert served.seen[0]["User-Agent"] == f"envd/{__version__}"
    assert served.seen[0]["Accept"] == "application/json"
    assert served.seen[1]["User-Agent"] == "other/1"


def test_errors_go_up_as_urllib_raises_them(served: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        http.open_url(url(served, "/missing"), timeout=5)
    assert info.value.code == 404
    info.value.close()
    port = served.server_address[1]
    served.shutdown()
    served.server_close()  # nothing listens there now
    with pytest.raises(urllib.error.URLError):
        http.open_url(f"http://127.0.0.1:{port}/", timeout=5)


def test_an_opener_without_proxies_ignores_the_proxy_environment(
    served: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens on port 9
    with http.open_url(url(served), timeout=5, opener=http.make_opener(proxies=False)) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.URLError):
        http.open_url(url(served), timeout=5, opener=http.make_opener())


# ---------------------------------------------------------------- TLS


def certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[Server, Path, Path]]:
    """An https server, the CA it presents, and another CA (that did not sign it)."""
    cert, key = certificate(tmp_path, "ours")
    other, _ = certificate(tmp_path, "theirs")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = start(context)
    server.body = b"over tls"
    yield server, cert, other
    server.shutdown()
    server.server_close()


BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")


def use_bundle(monkeypatch: pytest.MonkeyPatch, variable: str, bundle: Path) -> None:
    for name in BUNDLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(bundle))


@pytest.mark.parametrize("variable", BUNDLE_VARIABLES)
def test_https_trusts_the_bundle_the_environment_names_and_no_other(
    tls: tuple[Server, Path, Path], monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    server, ours, theirs = tls
    address = url(server, scheme="https")
    use_bundle(monkeypatch, variable, theirs)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http.open_url(address, timeout=5)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http.open_url(address, timeout=5, opener=http.make_opener())
    use_bundle(monkeypatch, variable, ours)
    with http.open_url(address, timeout=5) as response:
        assert http.read_bounded(response, 100) == b"over tls"
    with http.open_url(address, timeout=5, opener=http.make_opener()) as response:
        assert http.read_bounded(response, 100) == b"over tls"


def test_a_changed_bundle_is_trusted_at_the_next_request(
    tls: tuple[Server, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ours, theirs = tls
    bundle = tmp_path / "bundle.pem"
    shutil.copyfile(theirs, bundle)
    use_bundle(monkeypatch, "REQUESTS_CA_BUNDLE", bundle)
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        http.open_url(url(server, scheme="https"), timeout=5)
    replaced = tmp_path / "bundle.new"
    shutil.copyfile(ours, replaced)
    replaced.replace(bundle)  # as update-ca-certificates writes it: a new file in its place
    with http.open_url(url(server, scheme="https"), timeout=5) as response:
        assert response.status == 200


def test_the_context_is_made_once_per_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, _ = certificate(tmp_path, "ours")
    use_bundle(monkeypatch, "PIP_CERT", cert)
    assert http.ssl_context() is http.ssl_context()
    assert [c["subject"] for c in http.ssl_context().get_ca_certs()] == [
        ((("commonName", "ours"),),)
    ]
    assert http.ssl_context().verify_mode == ssl.CERT_REQUIRED
    assert http.ssl_context().check_hostname
