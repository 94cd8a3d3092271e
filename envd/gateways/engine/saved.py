"""The saved-image reader: `docker save` archives read from bytes and streams (no docker SDK)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar, cast

from envd.errors import VerificationError
from envd.gateways.files import HashingReader
from envd.model.content_tar import MemberStream, TarReader


def uncompress_saved_image(raw: Path, out: Path) -> bool:
    """`docker save` output at raw, written to out with every compressed layer uncompressed
    (named `blobs/sha256/<diff-id>`, checked against the config's diff-ids); manifest.json
    names them, and the OCI index, which names the compressed manifest, is left out.
    Returns False (raw moved to out as it is) when no layer is compressed."""
    with tarfile.open(raw, mode="r:") as tar:
        try:
            entry = json.loads(_member_bytes(tar, "manifest.json"))[0]
            config_name = str(entry["Config"])
            config_bytes = _member_bytes(tar, config_name)
            diff_ids = [str(d) for d in json.loads(config_bytes)["rootfs"]["diff_ids"]]
            layer_names = [str(n) for n in entry["Layers"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            why = f"the engine's image archive has no usable manifest ({exc})"
            raise VerificationError(why) from exc
        if len(layer_names) != len(diff_ids):
            raise VerificationError("the engine's image archive lists layers its config does not")
        heads = [_member_head(tar, name) for name in layer_names]
        # Podman names layers `<diff-id>.tar` (not a layout envd's archives take): rewritten too.
        podman = any(_DIGEST_TAR.fullmatch(name) for name in layer_names)
        if not podman and not any(h.startswith((_GZIP_MAGIC, _ZSTD_MAGIC)) for h in heads):
            os.replace(raw, out)
            return False
        with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as dest:
            _add_bytes(dest, config_name, config_bytes)
            names: list[str] = []
            for name, diff_id, head in zip(layer_names, diff_ids, heads, strict=True):
                names.append(f"blobs/sha256/{diff_id.removeprefix('sha256:')}")
                if names[-1] in names[:-1]:
                    continue  # a layer repeated in the image is stored once
                _add_layer(tar, dest, name, names[-1], diff_id, head, out.parent)
            entry = {"Config": config_name, "RepoTags": entry.get("RepoTags"), "Layers": names}
            _add_bytes(dest, "manifest.json", json.dumps([entry]).encode())
    return True


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        member = tar.extractfile(posixpath.normpath(name))
    except KeyError:
        member = None
    if member is None:
        raise VerificationError(f"{name} is missing from the engine's image archive")
    return member


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    data = _member(tar, name).read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise VerificationError(f"{name} in the engine's image archive is too large")
    return data


def _member_head(tar: tarfile.TarFile, name: str) -> bytes:
    return _member(tar, name).read(4)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(posixpath.normpath(name))
    info.size, info.mode = len(data), 0o444
    tar.addfile(info, io.BytesIO(data))


def _add_layer(
    tar: tarfile.TarFile,
    dest: tarfile.TarFile,
    name: str,
    to: str,
    diff_id: str,
    head: bytes,
    scratch: Path,
) -> None:
    """One layer, uncompressed (spooled beside the archive to learn its size) and checked."""
    if head.startswith(_ZSTD_MAGIC):
        raise VerificationError("zstd-compressed layers are not supported")
    source: IO[bytes] = _member(tar, name)
    with tempfile.TemporaryFile(dir=scratch) as spool:
        if head.startswith(_GZIP_MAGIC):
            source = cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
        digest = hashlib.sha256()
        try:
            while block := source.read(1 << 20):
                digest.update(block)
                spool.write(block)
        except (OSError, EOFError) as exc:
            raise VerificationError(f"layer {name} of the engine's archive: {exc}") from exc
        if "sha256:" + digest.hexdigest() != diff_id:
            raise VerificationError(
                f"layer {name} of the engine's archive hashes to sha256:{digest.hexdigest()}, "
                f"but its config says {diff_id}"
            )
        info = tarfile.TarInfo(to)
        info.size, info.mode = spool.tell(), 0o444
        spool.seek(0)
        dest.addfile(info, spool)


T = TypeVar("T")
_MAX_JSON = 16 << 20  # one manifest, index or config
_MAX_JSON_TOTAL = 64 << 20  # all JSON kept from one archive
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIGEST_TAR = re.compile(r"[0-9a-f]{64}\.tar")  # Podman's name for a layer in a save


@dataclass(frozen=True)
class SavedImage(Generic[T]):
    image_id: str  # sha256:<config digest>
    diff_ids: tuple[str, ...]  # bottom first, each one checked against the bytes read
    layers: tuple[T | None, ...]  # read_layer's result per diff-id; None where skipped
    sizes: tuple[int, ...] = ()  # each layer's size as stored in the archive
    blobs: tuple[str, ...] = ()  # each layer's digest as stored (compressed on containerd's store)


@dataclass
class _LayerRead(Generic[T]):
    blob_digest: str  # sha256 of the member as stored (compressed or not)
    diff_id: str  # sha256 of the uncompressed tar
    result: T | None
    error: str = ""
    size: int = 0


class ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (the engine's HTTP response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]  # a view: the rest is not copied
        return n

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()
        super().close()


class ChunkStream:
    """`read(size)` over an iterator of byte chunks, each handed on as it came when it fits
    (the saved-image reader asks for 1 MiB, the size the engine's chunks are read in): no
    buffer copies them on the way to the parse."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data, self._pending = self._pending + b"".join(self._chunks), b""
            return data
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = chunk
        if len(self._pending) <= size:
            data, self._pending = self._pending, b""
            return data
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Peeked:
    """A stream whose first bytes were already read."""

    def __init__(self, head: bytes, rest: _Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data + self._rest.read(size - len(data)) if len(data) < size else data
        return self._rest.read(size)


def _read_layer(
    member: _Readable, read_layer: Callable[[IO[bytes]], T], parse: bool
) -> _LayerRead[T]:
    outer = HashingReader(member)
    head = outer.read(4)
    source: _Readable = _Peeked(head, outer)
    if head.startswith(_ZSTD_MAGIC):
        outer.drain()
        return _LayerRead("", "", None, error="zstd-compressed layers are not supported")
    gz: gzip.GzipFile | None = None
    if head.startswith(_GZIP_MAGIC):
        gz = gzip.GzipFile(fileobj=cast(IO[bytes], source), mode="rb")
        source = gz
    # An uncompressed layer's bytes are its tar's: one hash gives both digests.
    inner = HashingReader(source) if gz is not None else None
    result: T | None = None
    error = ""
    try:
        if parse:
            result = read_layer(cast(IO[bytes], inner or source))
        diff_id = "sha256:" + inner.drain() if inner is not None else ""
    except (ValueError, OSError, EOFError, tarfile.TarError) as exc:
        error, diff_id = f"{type(exc).__name__}: {exc}", ""
    finally:
        if gz is not None:
            gz.close()
    blob_digest = "sha256:" + outer.drain()
    if inner is None and not error:
        diff_id = blob_digest
    return _LayerRead(blob_digest, diff_id, result, error)


def read_saved_image(
    archive: IO[bytes],
    read_layer: Callable[[IO[bytes]], T],
    skip: Collection[str] = (),
    skip_sizes: Collection[int] = (),
) -> SavedImage[T]:
    """Read a `docker save` tar in one pass: legacy (`<id>/layer.tar`) or OCI (`blobs/sha256/`).

    A layer already known is only hashed, not read: by its digest in the OCI layout; in the
    legacy layout (which names layers by v1 id) by its size among `skip_sizes`. A guess by size
    that hashes to an unknown layer comes back unread (None): the caller reads again.

    The archive lists layers before manifest.json, so every layer is read as it passes (the
    legacy layout names layers by a v1 id, not by digest); JSON members are kept (bounded) and
    blobs that look like JSON are kept in memory to be told apart once manifest.json is read.
    """
    layers: dict[str, _LayerRead[T]] = {}
    jsons: dict[str, bytes] = {}
    links: dict[str, str] = {}
    json_total = 0
    try:
        for info, member in _members(archive):
            name = posixpath.normpath(info.name)
            if info.issym() or info.islnk():
                base = posixpath.dirname(name) if info.issym() else ""
                links[name] = posixpath.normpath(posixpath.join(base, info.linkname))
                continue
            if member is None:
                continue
            is_blob = name.startswith("blobs/")
            # Podman (containers/image's docker-archive) writes each layer as
            # `<diff-id>.tar` at the top, `<id>/layer.tar` being a link to it.
            by_digest = is_blob or _DIGEST_TAR.fullmatch(name) is not None
            if name.endswith("/layer.tar") or by_digest:
                head = member.read(1)
                if is_blob and head == b"{" and info.size <= _MAX_JSON:
                    json_total += info.size
                    if json_total > _MAX_JSON_TOTAL:
                        raise VerificationError("the image archive holds too much metadata")
                    jsons[name] = head + member.read()
                    continue
                digest = "sha256:" + posixpath.basename(name).removesuffix(".tar")
                parse = digest not in skip if by_digest else info.size not in skip_sizes
                read = _read_layer(_Peeked(head, member), read_layer, parse)
                read.size = info.size
                layers[name] = read
            elif name.endswith(".json") or name == "index.json":
                if info.size > _MAX_JSON:
                    raise VerificationError(f"{name} in the image archive is too large")
                json_total += info.size
                if json_total > _MAX_JSON_TOTAL:
                    raise VerificationError("the image archive holds too much metadata")
                jsons[name] = member.read()
    except tarfile.TarError as exc:
        raise VerificationError(f"the engine's image archive is not a readable tar: {exc}") from exc
    return _assemble(layers, jsons, links, read_layer)


def _members(archive: IO[bytes]) -> Iterator[tuple[tarfile.TarInfo, _Readable | None]]:
    """The archive's members, with a stream over each regular file's contents (None for the
    others): read in large blocks (content_tar), by tarfile from a member that reader leaves."""
    reader = TarReader(archive, _MAX_JSON, VerificationError)
    while (info := reader.next()) is not None:
        yield info, MemberStream(reader.data()) if info.isfile() else None
    if reader.rest is not None:
        with tarfile.open(fileobj=reader.rest, mode="r|") as outer:
            for info in outer:
                yield info, outer.extractfile(info) if info.isfile() else None


def _assemble(
    layers: dict[str, _LayerRead[T]],
    jsons: dict[str, bytes],
    links: dict[str, str],
    read_layer: Callable[[IO[bytes]], T],
) -> SavedImage[T]:
    def resolve(name: str) -> str:
        name = posixpath.normpath(name)
        for _ in range(8):
            if name not in links:
                break
            name = links[name]
        return name

    try:
        manifest = json.loads(jsons[resolve("manifest.json")])
        entry = manifest[0]
        config_name = resolve(str(entry["Config"]))
        layer_names = [resolve(str(n)) for n in entry["Layers"]]
        config_bytes = jsons[config_name]
        config = json.loads(config_bytes)
        diff_ids = tuple(str(d) for d in config["rootfs"]["diff_ids"])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise VerificationError(f"the image archive has no usable manifest ({exc})") from exc
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    expected = posixpath.basename(config_name).removesuffix(".json")
    if config_digest != "sha256:" + expected:
        raise VerificationError(f"the image config does not match its name {config_name}")
    if len(layer_names) != len(diff_ids):
        raise VerificationError(
            f"the manifest lists {len(layer_names)} layers, the config {len(diff_ids)}"
        )
    results: list[T | None] = []
    sizes: list[int] = []
    blobs: list[str] = []
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        read = layers.get(name)
        if read is None and name in jsons:  # a small blob kept in memory: read it now
            read = _read_layer(io.BytesIO(jsons[name]), read_layer, True)
        if read is None:
            raise VerificationError(f"layer {name} is missing from the image archive")
        if read.error:
            raise VerificationError(f"layer {diff_id} cannot be read: {read.error}")
        if name.startswith("blobs/") and read.blob_digest != "sha256:" + posixpath.basename(name):
            raise VerificationError(f"blob {name} does not match its digest")
        if read.diff_id != diff_id:
            raise VerificationError(
                f"layer {name} hashes to {read.diff_id}, but the image says {diff_id}"
            )
        results.append(read.result)
        sizes.append(read.size)
        blobs.append(read.blob_digest)
    return SavedImage(config_digest, diff_ids, tuple(results), tuple(sizes), tuple(blobs))
