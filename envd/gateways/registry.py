"""A small client of the OCI distribution API (registry HTTP API v2), for the team build cache.

The engine pulls and pushes the step images themselves (with Docker's credentials and its
registry settings); this client only asks whether a tag exists (a manifest HEAD) and reads and
writes the small records the cache keeps beside each step image (an OCI manifest whose config
blob is the record). Every call has a timeout and reads at most MAX_BODY bytes. Registries on
127.0.0.0/8, [::1] or localhost (decided by parsing the host, never by a prefix) are spoken
to in plain http and without a proxy, as the engine does; others in https.
Only anonymous access is supported here (a registry that needs a login answers 401).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envd.errors import RegistryError

MAX_BODY = 64 * 1024  # a manifest or a record; anything larger is not ours
TIMEOUT_S = 10.0
_PORT = re.compile(r"[0-9]{1,5}")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
RECORD_TYPE = "application/vnd.envd.step-record.v1+json"
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
    def __init__(self, timeout: float = TIMEOUT_S) -> None:
        self._timeout = timeout
        self._direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._proxied = urllib.request.build_opener()

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
        opener = self._direct if is_loopback(repository.host) else self._proxied
        try:
            response = opener.open(urllib.request.Request(url), timeout=self._timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"cannot read {layer.digest} from {repository}: {exc}") from None
        return Blob(response, layer.size)

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
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        return self._request(repository.base_url + path, method, data, headers, repository)

    def _request(
        self,
        url: str,
        method: str,
        data: bytes | None,
        headers: Mapping[str, str],
        repository: Repository,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        opener = self._direct if is_loopback(repository.host) else self._proxied
        try:
            with opener.open(request, timeout=self._timeout) as response:
                body = response.read(MAX_BODY + 1)
                status = int(response.status)
                found = {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            found = {k.lower(): v for k, v in exc.headers.items()}
            body = b""
            exc.close()
            if status in (401, 403):
                raise RegistryError(
                    f"{repository} refused envd's build cache access (HTTP {status})",
                    hint="the build cache reads and writes without a login: use a registry "
                    "that allows it, or `envctl config cache ''` to turn the cache off",
                ) from None
            if status != 404:
                raise RegistryError(
                    f"{repository} answered HTTP {status} to {method} {url}",
                    hint="check the registry, or `envctl config cache ''` to turn it off",
                ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(
                f"cannot reach the build cache {repository}: {reason}",
                hint="is the registry running and reachable? (`envctl config cache ''` turns "
                "the cache off)",
            ) from None
        if len(body) > MAX_BODY:
            raise RegistryError(f"{repository} sent more than {MAX_BODY} bytes for {url}")
        return status, body, found


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
