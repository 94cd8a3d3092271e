"""A small client of the OCI distribution API (registry HTTP API v2), for the team build cache
and for shared runs (`envctl share run`: blobs, OCI 1.1 artifact manifests, referrers).

The engine pulls and pushes the step images themselves (with Docker's credentials and its
registry settings); this client only asks whether a tag exists (a manifest HEAD) and reads and
writes the small records the cache keeps beside each step image (an OCI manifest whose config
blob is the record). Every call has a timeout and reads at most MAX_BODY bytes. Registries on
127.0.0.0/8, [::1] or localhost (decided by parsing the host, never by a prefix) are spoken
to in plain http and without a proxy, as the engine does; others in https, trusting the host's
CA bundle (envd.gateways.http).
Only anonymous access is supported here (a registry that needs a login answers 401).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException
from typing import Any, BinaryIO

from envd.errors import RegistryError
from envd.gateways import http

MAX_BODY = 64 * 1024  # a manifest or a record; anything larger is not ours
TIMEOUT_S = 10.0
_PORT = re.compile(r"[0-9]{1,5}")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
RECORD_TYPE = "application/vnd.envd.step-record.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_LISTING = 4 << 20  # a tag list or a referrers index, bounded
MAX_TAG_PAGES = 1000
_SEND_BLOCK = 1 << 20
_SENDFILE_BLOCK = 16 << 20  # sendfile(2) per call: progress between calls
_ACCEPT = ", ".join(
    (
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)


@dataclass(frozen=True)
class Repository:
    """REGISTRY/NAME, split: `127.0.0.1:5000/team/cache` -> ("127.0.0.1:5000", "team/cache")."""

    host: str
    name: str

    @property
    def base_url(self) -> str:
        return f"{'http' if is_loopback(self.host) else 'https'}://{self.host}/v2/{self.name}"

    def __str__(self) -> str:
        return f"{self.host}/{self.name}"


def is_loopback(host: str) -> bool:
    """Whether HOST[:PORT] names this machine: the name `localhost`, an IPv4 address in
    127.0.0.0/8 or the IPv6 address [::1], with an optional numeric port. Decided by parsing,
    never by a prefix: `127.evil.com` is a name for another machine, and anything that is not
    exactly a host and a port (`127.0.0.1:5000@evil.com`) is not loopback."""
    bracketed = host.startswith("[")
    if bracketed:
        name, bracket, rest = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name = host.partition(":")[0]
        rest = host[len(name) :]
    if rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:])):
        return False
    if not bracketed and name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback and (address.version == 6) == bracketed


def parse_repository(reference: str) -> Repository:
    host, _, name = reference.partition("/")
    return Repository(host, name)


class RegistryClient:
    def __init__(self, timeout: float = TIMEOUT_S, purpose: str = "cache") -> None:
        """`purpose` names the use in messages: "cache" (the team build cache) or "share"."""
        self._timeout = timeout
        self._purpose = purpose

    def has_tag(self, repository: Repository, tag: str) -> bool:
        """Whether REPOSITORY:TAG exists (a manifest HEAD)."""
        status, _, _ = self._call(repository, "HEAD", f"/manifests/{tag}", accept=_ACCEPT)
        return status == 200

    def get_record(self, repository: Repository, tag: str) -> bytes | None:
        """The record stored as REPOSITORY:TAG; None when there is none. Its blob is checked
        against the digest its manifest names."""
        status, body, _ = self._call(repository, "GET", f"/manifests/{tag}", accept=_ACCEPT)
        if status == 404:
            return None
        try:
            manifest = json.loads(body)
            config = manifest["config"]
            digest, media_type = str(config["digest"]), str(config["mediaType"])
        except (ValueError, KeyError, TypeError):
            raise RegistryError(f"{repository}:{tag} is not a build cache record") from None
        if media_type != RECORD_TYPE:
            raise RegistryError(f"{repository}:{tag} is not a build cache record ({media_type})")
        status, blob, _ = self._call(repository, "GET", f"/blobs/{digest}")
        if status != 200:
            raise RegistryError(f"{repository}:{tag}: its record blob {digest} is missing")
        if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
            raise RegistryError(f"{repository}:{tag}: its record blob does not match {digest}")
        return blob

    def put_record(self, repository: Repository, tag: str, record: bytes) -> None:
        """Store `record` as REPOSITORY:TAG: one blob upload, then the manifest naming it."""
        if len(record) > MAX_BODY:
            raise RegistryError(f"a build cache record of {len(record)} bytes is too large")
        digest = "sha256:" + hashlib.sha256(record).hexdigest()
        status, _, headers = self._call(repository, "POST", "/blobs/uploads/")
        location = headers.get("location", "")
        if status != 202 or not location:
            raise RegistryError(f"{repository} did not start an upload (HTTP {status})")
        url = urllib.parse.urljoin(repository.base_url, location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        status, _, _ = self._request(
            url, "PUT", record, {"Content-Type": "application/octet-stream"}, repository
        )
        if status != 201:
            raise RegistryError(f"{repository} refused a record upload (HTTP {status})")
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": RECORD_TYPE, "digest": digest, "size": len(record)},
            "layers": [],
        }
        status, _, _ = self._call(
            repository,
            "PUT",
            f"/manifests/{tag}",
            data=json.dumps(manifest, sort_keys=True).encode(),
            content_type=OCI_MANIFEST,
        )
        if status != 201:
            raise RegistryError(f"{repository} refused the record {tag} (HTTP {status})")

    def manifest_layers(self, repository: Repository, tag: str) -> list[Layer]:
        """The layers of the image manifest REPOSITORY:TAG (compressed digests and sizes)."""
        accept = f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"
        status, body, _ = self._call(repository, "GET", f"/manifests/{tag}", accept=accept)
        if status == 404:
            return []
        try:
            layers = json.loads(body)["layers"]
            return [Layer(str(x["digest"]), int(x["size"]), str(x["mediaType"])) for x in layers]
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"{repository}:{tag}: an unreadable manifest ({exc})") from None

    def open_blob(self, repository: Repository, layer: Layer) -> Blob:
        """A layer's bytes as they come (each read has the timeout); at most its size."""
        url = f"{repository.base_url}/blobs/{layer.digest}"
        try:
            response = http.open_url(url, timeout=self._timeout, opener=self._opener(repository))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {layer.digest} from {repository}: {exc}") from None
        return Blob(response, layer.size)

    # ------------------------------------------------------------ blobs and artifacts

    def has_blob(self, repository: Repository, digest: str) -> bool:
        """Whether the blob DIGEST is in REPOSITORY (a blob HEAD)."""
        return self.blob_size(repository, digest) is not None

    def blob_size(self, repository: Repository, digest: str) -> int | None:
        """The size of the blob DIGEST in REPOSITORY (a blob HEAD), None when it is not there."""
        status, _, headers = self._call(repository, "HEAD", f"/blobs/{digest}")
        if status != 200:
            return None
        try:
            return max(0, int(headers.get("content-length", "")))
        except ValueError:
            raise RegistryError(f"{repository}: no size for the blob {digest}") from None

    def mount_blob(self, repository: Repository, digest: str, source: str) -> bool:
        """Ask the registry to mount DIGEST from the repository named `source` (same
        registry) into REPOSITORY; True when it did (201), False when it started an
        upload instead (202) or does not know the blob there."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        status, _, headers = self._call(repository, "POST", f"/blobs/uploads/?{query}")
        if status == 202 and headers.get("location"):
            self._cancel(repository, headers["location"])
        return status == 201

    def upload_blob(
        self,
        repository: Repository,
        digest: str,
        size: int,
        body: BinaryIO,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Upload `size` bytes read from `body` as the blob DIGEST: one POST, then one
        monolithic PUT streamed from `body` (the registry checks the digest). A file sent
        to a registry on this machine goes by sendfile(2), not through Python's buffers."""
        status, _, headers = self._call(repository, "POST", "/blobs/uploads/")
        location = headers.get("location", "")
        if status != 202 or not location:
            raise RegistryError(f"{repository} did not start an upload (HTTP {status})")
        url = urllib.parse.urljoin(repository.base_url, location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        if is_loopback(repository.host) and _is_file(body):
            status = self._put_file(url, body, size, on_bytes, repository)
        else:
            reader = _Counting(body, size, on_bytes)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            status, _, _ = self._request(url, "PUT", reader, headers, repository)
        if status != 201:
            raise RegistryError(f"{repository} refused the blob {digest} (HTTP {status})")

    def _put_file(
        self,
        url: str,
        body: BinaryIO,
        size: int,
        on_bytes: Callable[[int], None] | None,
        repository: Repository,
    ) -> int:
        """PUT `size` bytes of the file `body` (from where it stands) over plain http, with
        sendfile(2); the answer's status."""
        parts = urllib.parse.urlsplit(url)
        conn = HTTPConnection(parts.hostname or "", parts.port, timeout=self._timeout)
        start = body.tell()
        try:
            conn.putrequest("PUT", parts.path + (f"?{parts.query}" if parts.query else ""))
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            sock = conn.sock
            if sock is None:
                raise OSError("not connected")
            sent = 0
            while sent < size:
                count = min(_SENDFILE_BLOCK, size - sent)
                n = sock.sendfile(body, offset=start + sent, count=count)
                if n <= 0:
                    raise OSError(f"the file ended after {sent} of {size} bytes")
                sent += n
                if on_bytes is not None:
                    on_bytes(n)
            response = conn.getresponse()
            response.read(MAX_BODY)
            return int(response.status)
        except (OSError, HTTPException) as exc:
            raise RegistryError(f"cannot upload to the registry {repository}: {exc}") from None
        finally:
            conn.close()

    def get_blob(self, repository: Repository, digest: str, limit: int = MAX_BODY) -> bytes:
        """A small blob (at most `limit` bytes), checked against its digest."""
        status, blob, _ = self._call(repository, "GET", f"/blobs/{digest}", limit=limit)
        if status != 200:
            raise RegistryError(f"{repository}: the blob {digest} is missing")
        if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
            raise RegistryError(f"{repository}: the blob {digest} does not match its digest")
        return blob

    def open_digest(self, repository: Repository, digest: str, size: int) -> Blob:
        """The blob DIGEST's bytes as they come, at most `size` (the caller checks them)."""
        return self.open_blob(repository, Layer(digest, size, "application/octet-stream"))

    def put_manifest(
        self, repository: Repository, reference: str, body: bytes, media_type: str
    ) -> str:
        """Store a manifest (or index) as REPOSITORY:REFERENCE; its digest."""
        status, _, _ = self._call(
            repository, "PUT", f"/manifests/{reference}", data=body, content_type=media_type
        )
        if status != 201:
            raise RegistryError(f"{repository} refused the manifest {reference} (HTTP {status})")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(
        self, repository: Repository, reference: str, limit: int = MAX_BODY
    ) -> tuple[bytes, str] | None:
        """(the manifest's bytes, its digest) for REPOSITORY:REFERENCE, None when absent. A
        reference by digest is checked against the bytes."""
        status, body, _ = self._call(
            repository, "GET", f"/manifests/{reference}", accept=_ACCEPT, limit=limit
        )
        if status == 404:
            return None
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(f"{repository}: the manifest {reference} does not match its digest")
        return body, digest

    def manifest_digest(self, repository: Repository, reference: str) -> str:
        """The digest of REPOSITORY:REFERENCE ("" when absent), from its bytes."""
        found = self.get_manifest(repository, reference)
        return found[1] if found else ""

    def tags(self, repository: Repository) -> list[str]:
        """Every tag of REPOSITORY (paged, bounded)."""
        found: list[str] = []
        path = "/tags/list?n=1000"
        for _ in range(MAX_TAG_PAGES):
            status, body, headers = self._call(repository, "GET", path, limit=MAX_LISTING)
            if status == 404:
                return found
            try:
                tags = json.loads(body).get("tags") or []
                found += [str(t) for t in tags]
            except (ValueError, AttributeError):
                raise RegistryError(f"{repository}: an unreadable tag list") from None
            link = _next_link(headers.get("link", ""))
            if not link:
                return found
            parsed = urllib.parse.urlparse(link)
            if not parsed.path.startswith(f"/v2/{repository.name}/tags/list"):
                return found
            path = parsed.path[len(f"/v2/{repository.name}") :] + (
                f"?{parsed.query}" if parsed.query else ""
            )
        return found

    def referrers(self, repository: Repository, subject: str) -> tuple[list[dict[str, Any]], bool]:
        """(the descriptors of the artifacts whose subject is SUBJECT, whether the registry
        answered through the referrers API). Where it has no such API (404), the OCI
        tag-schema fallback: the index tagged `sha256-<hex>`."""
        status, body, headers = self._call(
            repository, "GET", f"/referrers/{subject}", accept=OCI_INDEX, limit=MAX_LISTING
        )
        api = status == 200 and headers.get("content-type", "").startswith(OCI_INDEX)
        if not api:
            found = self.get_manifest(repository, fallback_tag(subject), limit=MAX_LISTING)
            if found is None:
                return [], False
            body = found[0]
        try:
            manifests = json.loads(body).get("manifests") or []
            return [dict(m) for m in manifests if isinstance(m, dict)], api
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"{repository}: an unreadable referrers index") from None

    def _cancel(self, repository: Repository, location: str) -> None:
        url = urllib.parse.urljoin(repository.base_url, location)
        try:
            self._request(url, "DELETE", None, {}, repository)
        except RegistryError:
            pass  # an abandoned upload expires on the registry

    # ------------------------------------------------------------ http

    def _call(
        self,
        repository: Repository,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        accept: str = "",
        content_type: str = "",
        limit: int = MAX_BODY,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        return self._request(repository.base_url + path, method, data, headers, repository, limit)

    def _request(
        self,
        url: str,
        method: str,
        data: bytes | BinaryIO | _Counting | None,
        headers: Mapping[str, str],
        repository: Repository,
        limit: int = MAX_BODY,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers=dict(headers),
        )
        what = "the build cache" if self._purpose == "cache" else "the registry"
        try:
            with http.open_url(
                request, timeout=self._timeout, opener=self._opener(repository)
            ) as response:
                body = http.read_bounded(response, limit)
                status = int(response.status)
                found = {k.lower(): v for k, v in response.headers.items()}
        except http.BodyTooLarge:
            raise RegistryError(f"{repository} sent more than {limit} bytes for {url}") from None
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            found = {k.lower(): v for k, v in exc.headers.items()}
            body = b""
            exc.close()
            if status in (401, 403):
                raise RegistryError(
                    f"{repository} refused envd's {what} access (HTTP {status})",
                    hint=(
                        "the build cache reads and writes without a login: use a registry "
                        "that allows it, or `envctl config cache ''` to turn the cache off"
                        if self._purpose == "cache"
                        else "envd shares runs without a login: use a registry that allows it"
                    ),
                ) from None
            if status != 404:
                raise RegistryError(
                    f"{repository} answered HTTP {status} to {method} {url}",
                    hint="check the registry"
                    + (
                        ", or `envctl config cache ''` to turn it off"
                        if self._purpose == "cache"
                        else ""
                    ),
                ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"cannot reach {what} {repository}: {reason}",
                hint="is the registry running and reachable?"
                + (
                    " (`envctl config cache ''` turns the cache off)"
                    if self._purpose == "cache"
                    else ""
                ),
            ) from None
        return status, body, found

    def _opener(self, repository: Repository) -> urllib.request.OpenerDirector:
        """Loopback without a proxy (plain http); others through the environment's proxy, https
        trusting the host's CA bundle as it is now."""
        return self._direct if is_loopback(repository.host) else http.make_opener()

    @functools.cached_property
    def _direct(self) -> urllib.request.OpenerDirector:
        return http.make_opener(proxies=False)  # made at first use: none at the daemon's start


def fallback_tag(subject: str) -> str:
    """The OCI 1.1 tag-schema fallback for referrers of `sha256:<hex>`: `sha256-<hex>`."""
    return subject.replace(":", "-", 1)


def _next_link(header: str) -> str:
    """The URL of a `Link: <URL>; rel="next"` header, else ""."""
    for part in header.split(","):
        url, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") and url.strip().startswith("<"):
            return url.strip()[1:-1]
    return ""


def _is_file(body: BinaryIO) -> bool:
    """Whether `body` reads a regular file (what sendfile(2) can send)."""
    try:
        return stat.S_ISREG(os.fstat(body.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


class _Counting:
    """A request body that reads at most `size` bytes from `body` and reports each block."""

    def __init__(self, body: BinaryIO, size: int, on_bytes: Callable[[int], None] | None) -> None:
        self._body = body
        self._left = size
        self._on_bytes = on_bytes

    def read(self, amount: int = -1) -> bytes:
        # http.client asks for 8 KiB at a time; a larger block sends a large file faster.
        want = self._left if amount < 0 else min(max(amount, _SEND_BLOCK), self._left)
        data = self._body.read(want) if want > 0 else b""
        self._left -= len(data)
        if data and self._on_bytes is not None:
            self._on_bytes(len(data))
        return data


@dataclass(frozen=True)
class Layer:
    digest: str  # of the bytes the registry holds (compressed)
    size: int
    media_type: str

    @property
    def gzip(self) -> bool:
        return self.media_type.endswith(("gzip", ".tar.gzip")) or "+gzip" in self.media_type


class Blob:
    """A blob being read: refuses to read past the size the manifest names."""

    def __init__(self, response: Any, size: int) -> None:
        self._response = response
        self._left = size

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        try:
            data: bytes = self._response.read(want)
        except OSError as exc:
            raise RegistryError(f"reading a layer from the build cache failed: {exc}") from None
        self._left -= len(data)
        if self._left < 0:
            raise RegistryError("the build cache sent a layer larger than its manifest says")
        return data

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Blob:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
