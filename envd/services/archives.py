"""`envctl load` archives: read once as a stream, bounded, and rebuilt before the engine sees them.

An `envctl save` archive is a .tar.gz of `envd-share.json`, `fingerprint.json` and `image.tar`
(the engine's `docker save`: legacy `manifest.json`, `<config>.json`, `<dir>/layer.tar`, or the
OCI layout's `blobs/sha256/*`). Everything in it is the sender's: member names are normalised
as the engine would (`./manifest.json` is `manifest.json`), a duplicate, a link (but a legacy
`<dir>/layer.tar` alias of another layer), a device or an unknown member is refused, and every
name the manifest holds goes through `envd.model.safenames`. Only the config and layers the
manifest names are kept, spooled into a private folder under names chosen here, with a running
count against the bounds below; the engine then gets a tar written here from them alone (no
tags, no `repositories`, no OCI index), streamed, never read whole into memory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

from envd.errors import RegistryError, StateError, VerificationError
from envd.gateways.files import HashingReader
from envd.model.safenames import UnsafeName, relative

ARCHIVE_IMAGE = "image.tar"
ARCHIVE_FINGERPRINT = "fingerprint.json"
ARCHIVE_META = "envd-share.json"

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Bounds:
    """What one archive may hold. The largest images users share are tens of GiB."""

    compressed: int = 64 * GiB  # the .tar.gz on disk
    total: int = 96 * GiB  # all bytes after gunzip (what could be spooled is less)
    member: int = 48 * GiB  # one member (one layer)
    members: int = 4096  # of image.tar: 4 per layer in the legacy layout, at most 127 layers
    metadata: int = 1 * MiB  # envd-share.json, fingerprint.json, manifest.json, repositories...
    config: int = 16 * MiB  # the image config
    ratio: int = 100  # gunzipped bytes per compressed byte, past `slack` (a gzip bomb)
    slack: int = 64 * MiB


BOUNDS = Bounds()
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_MAX_HEADER = 64 << 10  # a pax or GNU long-name header
_MAX_LAYERS = 256
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadedImage:
    """What `read_archive` kept: the image id and the spooled files the engine gets."""

    meta: dict[str, Any]
    image_id: str  # sha256:<digest of the config bytes>
    config: Path
    layers: tuple[Path, ...]  # in the manifest's order; a repeated layer is the same file


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header over _MAX_HEADER before tarfile reads it whole."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > _MAX_HEADER:
            raise tarfile.HeaderError(f"a tar header of {self.size} bytes is over the bound")
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


class _Counter:
    """The running count of one archive's bytes, compressed and not, against its bounds."""

    def __init__(self, what: str, bounds: Bounds) -> None:
        self.what = what
        self.bounds = bounds
        self.compressed = 0
        self.total = 0

    def add_compressed(self, n: int) -> None:
        self.compressed += n
        if self.compressed > self.bounds.compressed:
            raise RegistryError(
                f"{self.what} is larger than {_size(self.bounds.compressed)}; refused",
                hint="envd loads archives of one image up to that size",
            )

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.bounds.total:
            raise RegistryError(
                f"{self.what} unpacks to more than {_size(self.bounds.total)}; refused "
                "before anything was handed to the engine",
                hint="it is not an archive `envctl share image --output` writes",
            )
        if self.total > self.bounds.slack + self.bounds.ratio * self.compressed:
            raise RegistryError(
                f"{self.what} unpacks to {_size(self.total)} from {_size(self.compressed)} "
                f"(more than {self.bounds.ratio} to 1): a compression bomb; refused",
                hint="it is not an archive `envctl share image --output` writes",
            )


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Reader:
    """read() through a stream, each byte counted by `count` (which raises past a bound)."""

    def __init__(self, stream: _Readable, count: Callable[[int], None]) -> None:
        self._stream = stream
        self._count = count

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK))
        self._count(len(data))
        return data


def normalise(name: str) -> str:
    """A member name as the engine sees it: cleaned, without leading `./` or `/`."""
    return posixpath.normpath(name).lstrip("/") if name else name


_CORRUPT = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, OverflowError)


def _corrupt(what: str, exc: BaseException) -> RegistryError:
    return RegistryError(
        f"{what} is corrupt or truncated ({exc})",
        hint="copy it again, or pull the image from a registry",
    )


def _plain(info: tarfile.TarInfo) -> bool:
    """A regular file, not sparse: a sparse member's holes would be bytes never counted."""
    return info.isfile() and info.type != tarfile.GNUTYPE_SPARSE and info.sparse is None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _size(n: int) -> str:
    return f"{n / GiB:.0f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def _refuse(what: str, member: str, why: str) -> VerificationError:
    return VerificationError(
        f"{what}: member {ascii(member)[1:-1]!s} {why}; refused, nothing was loaded",
        hint="load only archives written by `envctl share image --output`; ask for a fresh one",
    )


def _read_small(member: IO[bytes], size: int, bound: int, what: str, name: str) -> bytes:
    if size > bound:
        raise _refuse(what, name, f"is {size} bytes, more than {bound}")
    data = member.read(size)
    if len(data) != size:
        raise RegistryError(f"{what} is corrupt or truncated (member {name} ends early)")
    return data


class _Spool:
    """Files kept from the archive, under names chosen here, in a private folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._n = 0

    def keep(self, member: IO[bytes], size: int) -> tuple[Path, str]:
        """(where, sha256 hex) of `size` bytes copied from member."""
        self._n += 1
        path = self.folder / f"m{self._n:05d}"
        digest = hashlib.sha256()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            out = os.fdopen(fd, "wb")
        except OSError as exc:
            raise _unwritable(self.folder, exc) from None
        with out:
            left = size
            while left > 0:
                block = member.read(min(left, _CHUNK))
                if not block:
                    raise RegistryError("the archive is corrupt or truncated (a member ends early)")
                digest.update(block)
                left -= len(block)
                try:
                    out.write(block)
                except OSError as exc:
                    raise _unwritable(self.folder, exc) from None
        return path, digest.hexdigest()


def _unwritable(folder: Path, exc: OSError) -> StateError:
    return StateError(
        f"cannot write the archive's image to {folder}: {exc.strerror or exc}; nothing was loaded",
        hint="free space where envd keeps its home ($ENVD_HOME), then load again",
    )


@dataclass
class _ImageMembers:
    manifest: bytes | None = None
    kept: dict[str, tuple[Path, str, int]] = field(default_factory=dict)  # name: path, sha, size
    aliases: dict[str, str] = field(default_factory=dict)  # <dir>/layer.tar: the one it links to
    seen: set[str] = field(default_factory=set)


def read_archive(source: IO[bytes], spool: Path, what: str, bounds: Bounds = BOUNDS) -> LoadedImage:
    """Parse an `envctl save` archive in one pass; keep the image's config and layers in
    `spool` (an empty private folder). Raises RegistryError (8) for what is corrupt, too large
    or not an envd archive, VerificationError (9) for a member or manifest that is refused."""
    counter = _Counter(what, bounds)
    meta: dict[str, Any] | None = None
    image: _ImageMembers | None = None
    image_sha = ""
    seen: set[str] = set()
    try:
        raw = cast(IO[bytes], _Reader(source, counter.add_compressed))
        stream = _Reader(gzip.GzipFile(fileobj=raw, mode="rb"), counter.add)
        with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as outer:  # type: ignore[call-overload]
            for info in outer:
                name = normalise(info.name)
                if name in seen:
                    raise _refuse(what, name, "appears twice")
                seen.add(name)
                if name not in (ARCHIVE_META, ARCHIVE_FINGERPRINT, ARCHIVE_IMAGE):
                    raise _refuse(what, name, "is not part of an envd archive")
                if not _plain(info):
                    raise _refuse(what, name, "is not a plain file")
                if info.size > bounds.member:
                    raise _refuse(what, name, f"is larger than {_size(bounds.member)}")
                member = outer.extractfile(info)
                assert member is not None  # a plain file
                if name == ARCHIVE_META:
                    loaded = _json(_read_small(member, info.size, bounds.metadata, what, name))
                    if not isinstance(loaded, dict):
                        raise _refuse(what, name, "is not a JSON object")
                    meta = loaded
                elif name == ARCHIVE_FINGERPRINT:
                    _read_small(member, info.size, bounds.metadata, what, name)
                else:
                    hashing = HashingReader(member)
                    image = _image_members(hashing, spool, f"{what}: {ARCHIVE_IMAGE}", bounds)
                    image_sha = hashing.drain()
            while stream.read(_CHUNK):  # the rest of the gzip stream: its CRC and length
                pass
    except _CORRUPT as exc:
        raise _corrupt(what, exc) from None
    if meta is None or image is None:
        raise RegistryError(
            f"{what} is not an envd archive (missing members: it needs {ARCHIVE_META} "
            f"and {ARCHIVE_IMAGE})"
        )
    if meta.get("image_sha256") != image_sha:
        raise RegistryError(
            f"{what} is corrupt: the image inside does not match its recorded sha256",
            hint="copy it again, or pull the image from a registry",
        )
    # Only now, with the bytes known to be those the sender wrote: what they say.
    loaded = _assemble(image, f"{what}: {ARCHIVE_IMAGE}", bounds)
    return LoadedImage(meta, loaded.image_id, loaded.config, loaded.layers)


def read_image_tar(source: Any, spool: Path, what: str, bounds: Bounds = BOUNDS) -> LoadedImage:
    """Parse a `docker save` tar from a stream (legacy or OCI layout), keeping the config
    and layers in `spool`; the manifest's tags and every other member are dropped."""
    return _assemble(_image_members(source, spool, what, bounds), what, bounds)


def _image_members(source: Any, spool: Path, what: str, bounds: Bounds) -> _ImageMembers:
    found = _ImageMembers()
    files = _Spool(spool)
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|", tarinfo=_BoundedTarInfo) as tar:
            for info in tar:
                count += 1
                if count > bounds.members:
                    why = f"is past the bound of {bounds.members} members"
                    raise _refuse(what, info.name, why)
                _image_member(tar, info, found, files, what, bounds)
    except _CORRUPT as exc:
        raise _corrupt(what, exc) from None
    return found


def _image_member(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    found: _ImageMembers,
    files: _Spool,
    what: str,
    bounds: Bounds,
) -> None:
    name = normalise(info.name)
    try:
        parts = relative(name, f"{what}: a member name").parts
    except UnsafeName:
        raise _refuse(what, info.name, "is not a name inside the archive") from None
    if name in found.seen:
        raise _refuse(what, name, "appears twice (after `./` and `..` are resolved)")
    found.seen.add(name)
    if info.size > bounds.member:
        raise _refuse(what, name, f"is larger than {_size(bounds.member)}")
    top = len(parts) == 1
    layer = len(parts) == 2 and parts[1] == "layer.tar"
    blob = len(parts) == 3 and parts[:2] == ("blobs", "sha256")
    if info.isdir():
        if top or name == "blobs/sha256":
            return
        raise _refuse(what, name, "is a folder envd does not expect")
    if info.issym() and layer:  # the legacy layout saves a repeated layer as a link to it
        target = normalise(posixpath.join(parts[0], info.linkname))
        found.aliases[name] = target
        return
    if not _plain(info):
        raise _refuse(what, name, "is a link, a device or a sparse file, not a plain file")
    member = tar.extractfile(info)
    assert member is not None
    if name == "manifest.json":
        found.manifest = _read_small(member, info.size, bounds.metadata, what, name)
    elif name in ("repositories", "index.json", "oci-layout") or (
        len(parts) == 2 and parts[1] in ("VERSION", "json")
    ):
        _read_small(member, info.size, bounds.metadata, what, name)  # tags, or nothing used
    elif (top and name.endswith(".json")) or layer or blob:
        if top and info.size > bounds.config:
            raise _refuse(what, name, f"is {info.size} bytes, more than {bounds.config}")
        path, digest = files.keep(member, info.size)
        found.kept[name] = (path, digest, info.size)
    else:
        raise _refuse(what, name, "is not part of an image archive")


def _assemble(found: _ImageMembers, what: str, bounds: Bounds) -> LoadedImage:
    if found.manifest is None:
        raise VerificationError(f"{what} has no manifest.json; refused, nothing was loaded")
    try:
        manifest = _json(found.manifest)
    except ValueError as exc:
        raise _malformed(what, f"it is not JSON ({exc})") from None
    if not isinstance(manifest, list) or len(manifest) != 1:
        raise _malformed(what, "it must list exactly one image")
    entry = manifest[0]
    if not isinstance(entry, dict):
        raise _malformed(what, "its entry is not a JSON object")
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str):
        raise _malformed(what, "`Config` is missing or not a string")
    if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
        raise _malformed(what, "`Layers` is missing or not a list of strings")
    if len(layer_names) > _MAX_LAYERS:
        raise _malformed(what, f"it lists {len(layer_names)} layers (at most {_MAX_LAYERS})")
    config_path, config_sha, config_size = _named(found, config_name, what, "Config")
    if config_size > bounds.config:
        raise _malformed(what, f"its config is {config_size} bytes (at most {bounds.config})")
    expected = posixpath.basename(normalise(config_name)).removesuffix(".json")
    if config_sha != expected:
        raise _malformed(what, f"the config {config_name} does not hash to its name")
    try:
        config = _json(config_path.read_bytes())
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list):
            raise TypeError("diff_ids is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed(what, f"its config has no usable rootfs.diff_ids ({exc})") from None
    if len(diff_ids) != len(layer_names):
        raise _malformed(
            what, f"it lists {len(layer_names)} layers, its config {len(diff_ids)} diff-ids"
        )
    layers: list[Path] = []
    by_digest: dict[str, Path] = {}  # a layer repeated in the image is sent once
    for name, diff_id in zip(layer_names, diff_ids, strict=True):
        path, sha, _ = _named(found, name, what, "Layers")
        if f"sha256:{sha}" != diff_id:
            raise _malformed(
                what, f"layer {name} hashes to sha256:{sha}, the config says {diff_id}"
            )
        layers.append(by_digest.setdefault(sha, path))
    return LoadedImage({}, f"sha256:{config_sha}", config_path, tuple(layers))


def _named(found: _ImageMembers, name: str, what: str, key: str) -> tuple[Path, str, int]:
    """The kept member a manifest name points at (one link followed, for a legacy layer)."""
    clean = "/".join(relative(name, f"{what}: manifest.json `{key}`").parts)
    clean = found.aliases.get(clean, clean)
    kept = found.kept.get(clean)
    if kept is None:
        raise _malformed(what, f"`{key}` names {name!a}, which the archive does not hold")
    return kept


def _malformed(what: str, why: str) -> VerificationError:
    return VerificationError(
        f"{what}: its manifest.json is refused: {why}; nothing was loaded",
        hint="load only archives written by `envctl share image --output`; ask for a fresh one",
    )


# ------------------------------------------------------------------ what the engine gets


def rebuilt_image_tar(image: LoadedImage) -> Iterator[bytes]:
    """The tar the engine loads, written here: manifest.json (no tags), config, layers.
    Yields chunks of at most 1 MiB; files are read as they are sent."""
    hexid = image.image_id.removeprefix("sha256:")
    names: dict[Path, str] = {}
    for path in image.layers:
        names.setdefault(path, f"{len(names):03d}/layer.tar")
    manifest = [
        {
            "Config": f"{hexid}.json",
            "RepoTags": None,
            "Layers": [names[path] for path in image.layers],
        }
    ]
    data = json.dumps(manifest).encode()
    yield _header("manifest.json", len(data)) + data + _padding(len(data))
    yield from _file(f"{hexid}.json", image.config)
    for path, name in names.items():
        yield from _file(name, path)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _file(name: str, path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        yield _header(name, size)
        left = size
        while left > 0:
            block = f.read(min(left, _CHUNK))
            if not block:
                raise RegistryError(f"{path} shrank while it was handed to the engine")
            left -= len(block)
            yield block
        yield _padding(size)
