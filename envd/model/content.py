"""The content of an image's filesystem, read from its layer tars; nothing in the image runs.

Pure: the only I/O is reading the binary streams passed in. Each layer tar becomes a
`LayerSummary` (its entries, whiteouts and the few files the readable lists come from), which
serialises to JSON so a layer is read once and cached by diff-id. Summaries merge bottom to
top with the OCI whiteout rules into a `Manifest`; its content hash is the sha256 of a
canonical serialisation (entries sorted by path bytes, UTF-8 JSON, paths that are not UTF-8
written as hex under a separate key so no two paths can collide).
"""

from __future__ import annotations

import base64
import bisect
import csv
import hashlib
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import IO, Any

from envd.model.content_tar import TarReader

Buffer = bytes | memoryview

CONTENT_SCHEMA = 1
SUMMARY_SCHEMA = 3  # 2: os-release and pyvenv.cfg facts; 3: RECORD hashes

# Paths left out of the manifest, with everything under them.
EXCLUDED = (
    "/etc/hostname",  # bind-mounted by Docker per container; builds leave an empty placeholder
    "/etc/hosts",  # same: bind-mounted at run time, placeholder in committed layers
    "/etc/resolv.conf",  # same: written from the host's DNS settings at run time
    "/.dockerenv",  # created by Docker in every container, so committed layers carry it
    "/run/.containerenv",  # Podman's /.dockerenv: created in every container it runs
    "/proc",  # kernel filesystem mounted at run time; the image only holds a mount point
    "/sys",  # same, sysfs
    "/dev",  # devtmpfs/tmpfs mounted at run time; device nodes in a layer are never seen
)

# Where `--init` bind-mounts the engine's init; a step container leaves an empty placeholder
# there, whose mode is the engine's choice (0755 on Docker 20.10, 0644 on Docker 26). It is
# recorded as Docker 20.10 made it, so the hash does not depend on the engine, and every
# environment hash recorded before stays valid.
INIT_PLACEHOLDERS = ("/sbin/docker-init", "/usr/sbin/docker-init")
# Podman's `--init` (catatonit) is bind-mounted here instead; its empty placeholder is recorded
# as Docker's, where Docker 20.10 would have left it, so both engines give the same hash.
PODMAN_INIT = "/run/podman-init"
# Podman makes /etc/mtab -> /proc/mounts in every container that lacks it (Docker does not
# commit one); dropped when the layer that adds it carries Podman's mark, so an /etc/mtab the
# image's own files make is kept.
PODMAN_MARK = "/run/.containerenv"
PODMAN_MTAB = ("/etc/mtab", "/proc/mounts")
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Bounds on what is kept from file contents, so a crafted image cannot exhaust memory.
MAX_DPKG_STATUS = 32 << 20
MAX_DPKG_LIST = 8 << 20
MAX_METADATA = 1 << 20  # only the header block is parsed
MAX_RECORD = 8 << 20
MAX_FACT_BYTES_PER_LAYER = 256 << 20
MAX_ENTRIES_PER_LAYER = 2_000_000
MAX_HEADER_BYTES = 1 << 20  # pax / GNU long-name headers

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_INFO = "/var/lib/dpkg/info/"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

FACT_DPKG_STATUS = "dpkg-status"  # items: (package, version, arch)
FACT_DPKG_LIST = "dpkg-list"  # items: (path,) owned by the package named in the file name
FACT_METADATA = "dist-metadata"  # items: ((name, version),)
FACT_RECORD = "dist-record"  # items: (path,) owned by the distribution of the dist-info
FACT_KEY_VALUES = "key-values"  # items: (key, value): os-release(5) and pyvenv.cfg files
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
MAX_SMALL_TEXT = 64 << 10

KINDS = ("file", "dir", "symlink", "hardlink", "char", "block", "fifo")


class ContentError(ValueError):
    """A layer or summary that cannot be read (not a tar, over a bound, bad cache JSON)."""


@dataclass(frozen=True, slots=True)  # (slots: a 20,000-file image's entries in half the memory)
class Entry:
    kind: str  # one of KINDS; "hardlink" only inside a LayerSummary
    mode: int  # permission bits including setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    size: int = 0
    sha256: str = ""  # regular files
    target: str = ""  # symlink target, or the path a hardlink points at
    device: str = ""  # "major:minor" for char and block devices


@dataclass(frozen=True)
class Fact:
    kind: str
    items: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LayerSummary:
    entries: dict[str, Entry]  # path -> entry, in tar order
    whiteouts: frozenset[str] = frozenset()  # paths this layer deletes from lower layers
    opaque: frozenset[str] = frozenset()  # directories whose lower contents this layer hides
    facts: dict[str, Fact] = field(default_factory=dict)  # path -> parsed content


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry]
    facts: dict[str, Fact] = field(default_factory=dict)


# ------------------------------------------------------------------ paths


def normalise(name: str) -> str:
    """A tar member name as an absolute path: '/' root, no '.', '..' or trailing slash."""
    if not ("//" in name or "/." in name or name.startswith(".") or name.endswith("/")):
        return name if name.startswith("/") else "/" + name  # nothing to take out (most)
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def path_bytes(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _put_text(out: dict[str, Any], key: str, text: str) -> None:
    if _is_utf8(text):
        out[key] = text
    else:  # undecodable bytes: hex under a key of its own, so it cannot collide with text
        out[key + "_hex"] = path_bytes(text).hex()


def _get_text(data: Mapping[str, Any], key: str) -> str:
    if key + "_hex" in data:
        return bytes.fromhex(str(data[key + "_hex"])).decode("utf-8", "surrogateescape")
    return str(data.get(key, ""))


def is_excluded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in EXCLUDED)


# ------------------------------------------------------------------ reading one layer


class BoundedTarInfo(tarfile.TarInfo):
    """Refuses pax and GNU long-name headers larger than MAX_HEADER_BYTES before reading them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        header_types = (
            tarfile.XHDTYPE,
            tarfile.XGLTYPE,
            tarfile.SOLARIS_XHDTYPE,
            tarfile.GNUTYPE_LONGNAME,
            tarfile.GNUTYPE_LONGLINK,
        )
        if self.type in header_types and self.size > MAX_HEADER_BYTES:
            raise ContentError(f"a tar header of {self.size} bytes is over the bound")
        return super()._proc_member(tarfile_)  # type: ignore[misc, no-any-return]


def _fact_kind(path: str) -> tuple[str, int] | None:
    if path == DPKG_STATUS:
        return FACT_DPKG_STATUS, MAX_DPKG_STATUS
    if path in OS_RELEASE or posixpath.basename(path) == "pyvenv.cfg":
        return FACT_KEY_VALUES, MAX_SMALL_TEXT
    if path.startswith(DPKG_INFO) and path.endswith(".list") and path.count("/") == 5:
        return FACT_DPKG_LIST, MAX_DPKG_LIST
    parent = posixpath.basename(posixpath.dirname(path))
    if parent.endswith(".dist-info"):
        base = posixpath.basename(path)
        if base == "METADATA":
            return FACT_METADATA, MAX_METADATA
        if base == "RECORD":
            return FACT_RECORD, MAX_RECORD
    return None


class _Layer:
    """A layer's summary as its members are read, in tar order."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.whiteouts: set[str] = set()
        self.opaque: set[str] = set()
        self.facts: dict[str, Fact] = {}
        self.fact_bytes = 0

    def add(self, info: tarfile.TarInfo, contents: Callable[[], Iterable[Buffer]]) -> None:
        if len(self.entries) + len(self.whiteouts) >= MAX_ENTRIES_PER_LAYER:
            raise ContentError(f"a layer with more than {MAX_ENTRIES_PER_LAYER} entries")
        path = normalise(info.name)
        base = posixpath.basename(path)
        if base == OPAQUE:
            self.opaque.add(posixpath.dirname(path))
            return
        if base.startswith(WHITEOUT):
            self.whiteouts.add(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT) :]))
            return
        budget = MAX_FACT_BYTES_PER_LAYER - self.fact_bytes
        entry, data = _entry(info, path, budget, contents)
        self.entries.pop(path, None)  # a repeated path: the later entry wins, in its place
        self.entries[path] = entry
        self.facts.pop(path, None)
        if data is not None:
            self.fact_bytes += len(data)
            fact = parse_fact(path, data)
            if fact is not None:
                self.facts[path] = fact

    def summary(self) -> LayerSummary:
        return LayerSummary(
            self.entries, frozenset(self.whiteouts), frozenset(self.opaque), self.facts
        )


def summarise_layer(stream: IO[bytes]) -> LayerSummary:
    """Read one uncompressed layer tar from start to end-of-archive: in large reads
    (content_tar), and by tarfile from a member that reader leaves to it on."""
    layer = _Layer()
    try:
        reader = TarReader(stream, MAX_HEADER_BYTES, ContentError)
        while (info := reader.next()) is not None:
            layer.add(info, reader.data)
        if reader.rest is not None:
            with tarfile.open(
                fileobj=reader.rest,
                mode="r|",
                encoding="utf-8",
                errors="surrogateescape",
                tarinfo=BoundedTarInfo,
            ) as tar:
                for info in tar:
                    layer.add(info, partial(_member_contents, tar, info))
    except tarfile.TarError as exc:
        raise ContentError(f"not a readable layer tar: {exc}") from exc
    return layer.summary()


def _member_contents(tar: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[bytes]:
    member = tar.extractfile(info)
    if member is not None:
        with member:
            while block := member.read(1 << 20):
                yield block


def read_entry(
    tar: tarfile.TarFile, info: tarfile.TarInfo, path: str, fact_budget: int
) -> tuple[Entry, bytes | None]:
    return _entry(info, path, fact_budget, partial(_member_contents, tar, info))


def _entry(
    info: tarfile.TarInfo,
    path: str,
    fact_budget: int,
    contents: Callable[[], Iterable[Buffer]],
) -> tuple[Entry, bytes | None]:
    mode, uid, gid = info.mode & 0o7777, info.uid, info.gid
    if info.isdir():
        return Entry("dir", mode=mode, uid=uid, gid=gid), None
    if info.issym():
        return Entry("symlink", target=info.linkname, mode=mode, uid=uid, gid=gid), None
    if info.islnk():
        return Entry("hardlink", target=normalise(info.linkname), mode=mode, uid=uid, gid=gid), None
    if info.ischr() or info.isblk():
        kind = "char" if info.ischr() else "block"
        return Entry(
            kind, device=f"{info.devmajor}:{info.devminor}", mode=mode, uid=uid, gid=gid
        ), None
    if info.isfifo():
        return Entry("fifo", mode=mode, uid=uid, gid=gid), None
    # Regular files (and anything else tar calls a file: contiguous, sparse).
    fact = _fact_kind(path)
    keep = fact is not None and info.size <= min(fact[1], fact_budget)
    digest = hashlib.sha256()
    kept = bytearray()
    size = 0
    for block in contents():
        digest.update(block)
        size += len(block)
        if keep:
            kept += block
    return Entry("file", size=size, sha256=digest.hexdigest(), mode=mode, uid=uid, gid=gid), (
        bytes(kept) if keep else None
    )


# ------------------------------------------------------------------ readable lists


def parse_fact(path: str, data: bytes) -> Fact | None:
    kind = _fact_kind(path)
    if kind is None:
        return None
    text = data.decode("utf-8", "replace")
    if kind[0] == FACT_DPKG_STATUS:
        return Fact(FACT_DPKG_STATUS, tuple(_dpkg_status(text)))
    if kind[0] == FACT_KEY_VALUES:
        return Fact(FACT_KEY_VALUES, tuple(_key_values(text)))
    if kind[0] == FACT_DPKG_LIST:
        paths = {normalise(line) for line in text.splitlines() if line.startswith("/")}
        return Fact(FACT_DPKG_LIST, tuple((p,) for p in sorted(paths)))
    if kind[0] == FACT_METADATA:
        headers = _headers(text)
        return Fact(FACT_METADATA, ((headers.get("name", ""), headers.get("version", "")),))
    site = posixpath.dirname(posixpath.dirname(path))
    owned: dict[str, str] = {}
    for row in csv.reader(text.splitlines()):
        if row and row[0]:
            owned[normalise(posixpath.join(site, row[0]))] = _record_sha256(row)
    return Fact(FACT_RECORD, tuple((p, owned[p]) for p in sorted(owned)))


def _record_sha256(row: list[str]) -> str:
    """A RECORD row's sha256 as hex ("" when it records none, as for RECORD itself)."""
    algorithm, _, encoded = (row[1] if len(row) > 1 else "").partition("=")
    if algorithm != "sha256" or not encoded:
        return ""
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    except ValueError:
        return "invalid"


def _key_values(text: str) -> Iterator[tuple[str, str]]:
    """`KEY=value` (os-release, shell quoting) or `key = value` (pyvenv.cfg) lines."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key and not key.startswith("#"):
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            yield key, value


def key_values(manifest: Manifest, path: str) -> dict[str, str]:
    """The key/value pairs of an os-release or pyvenv.cfg file in the image ({} if absent)."""
    fact = manifest.facts.get(path)
    if fact is None or fact.kind != FACT_KEY_VALUES:
        return {}
    return {item[0]: item[1] for item in fact.items if len(item) == 2}


def _headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        name, sep, value = line.partition(":")
        if sep and not line[0].isspace():
            out.setdefault(name.strip().lower(), value.strip())
    return out


def _dpkg_status(text: str) -> Iterator[tuple[str, str, str]]:
    for stanza in text.split("\n\n"):
        fields = _headers(stanza.strip("\n"))
        if fields.get("package") and fields.get("status", "").endswith(" installed"):
            yield fields["package"], fields.get("version", ""), fields.get("architecture", "")


# ------------------------------------------------------------------ merging


def merge(layers: Iterable[LayerSummary]) -> Manifest:
    """Apply layers bottom first: whiteouts and opaque dirs hide lower content only."""
    state: dict[str, Entry] = {}
    facts: dict[str, Fact] = {}
    for layer in layers:
        replaced = {p for p, e in layer.entries.items() if e.kind != "dir"}
        hide_below = layer.whiteouts | layer.opaque | replaced
        if hide_below:
            for path in _hidden(state, layer.whiteouts, hide_below):
                del state[path]
                facts.pop(path, None)
        podman_mtab = _podman_mtab(layer, state)
        for path, entry in layer.entries.items():
            if path == podman_mtab:
                continue
            if entry.kind != "hardlink":
                state[path] = entry
                facts.pop(path, None)
                if path in layer.facts:
                    facts[path] = layer.facts[path]
        for path, entry in layer.entries.items():
            if entry.kind == "hardlink":
                _link(state, facts, path, entry)
    kept = {p: e for p, e in state.items() if not is_excluded(p)}
    podman_init = kept.get(PODMAN_INIT)
    if podman_init is not None and podman_init.kind == "file" and podman_init.size == 0:
        del kept[PODMAN_INIT]
        sbin = kept.get("/sbin")
        merged_usr = sbin is not None and sbin.kind == "symlink"
        kept.setdefault("/usr/sbin/docker-init" if merged_usr else "/sbin/docker-init", podman_init)
    for path in INIT_PLACEHOLDERS:
        placeholder = kept.get(path)
        if placeholder is not None and placeholder.kind == "file" and placeholder.size == 0:
            kept[path] = replace(placeholder, mode=0o755, sha256=_EMPTY_SHA256)
    return Manifest(kept, {p: f for p, f in facts.items() if p in kept})


def _podman_mtab(layer: LayerSummary, below: Mapping[str, Entry]) -> str:
    """ "/etc/mtab" when this layer is a Podman container's commit that added Podman's own
    /etc/mtab symlink (none below it), else ""."""
    path, target = PODMAN_MTAB
    mtab = layer.entries.get(path)
    if PODMAN_MARK not in layer.entries or mtab is None or path in below:
        return ""
    return path if mtab.kind == "symlink" and mtab.target == target else ""


def _hidden(
    state: Mapping[str, Entry], whiteouts: frozenset[str], hide_below: frozenset[str] | set[str]
) -> list[str]:
    """Lower paths a layer hides: its whiteouts themselves, and everything below a whiteout,
    an opaque directory or a path the layer replaces with a non-directory. Found by prefix
    search over the sorted paths (a large layer hides few paths; scanning all is slow)."""
    keys = sorted(state)
    hidden = [w for w in whiteouts if w in state]
    for root in hide_below:
        prefix = root if root.endswith("/") else root + "/"
        i = bisect.bisect_left(keys, prefix)
        while i < len(keys) and keys[i].startswith(prefix):
            hidden.append(keys[i])
            i += 1
    return list(dict.fromkeys(hidden))


def _link(state: dict[str, Entry], facts: dict[str, Fact], path: str, link: Entry) -> None:
    target = state.get(link.target)
    facts.pop(path, None)
    if target is None or target.kind in ("dir", "hardlink"):
        # A link to nothing readable: record it, so the manifest still shows the path.
        state[path] = Entry("hardlink", link.mode, link.uid, link.gid, target=link.target)
        return
    state[path] = target  # one inode: same content, mode and owner as its target
    if link.target in facts:
        facts[path] = facts[link.target]


def manifest_from_tars(streams: Iterable[IO[bytes]]) -> Manifest:
    return merge(summarise_layer(s) for s in streams)


# ------------------------------------------------------------------ serialising


def _entry_dict(path: str, entry: Entry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_text(out, "path", path)
    out.update(kind=entry.kind, mode=entry.mode, uid=entry.uid, gid=entry.gid)
    if entry.kind == "file":
        out.update(size=entry.size, sha256=entry.sha256)
    if entry.kind in ("symlink", "hardlink"):
        _put_text(out, "target", entry.target)
    if entry.device:
        out["device"] = entry.device
    return out


def _entry_from(data: Mapping[str, Any]) -> tuple[str, Entry]:
    kind = str(data["kind"])
    if kind not in KINDS:
        raise ContentError(f"unknown entry kind {kind!r}")
    return _get_text(data, "path"), Entry(
        kind=kind,
        mode=int(data["mode"]),
        uid=int(data["uid"]),
        gid=int(data["gid"]),
        size=int(data.get("size", 0)),
        sha256=str(data.get("sha256", "")),
        target=_get_text(data, "target"),
        device=str(data.get("device", "")),
    )


def canonical_bytes(manifest: Manifest) -> bytes:
    """What the content hash covers: schema version and every entry, sorted by path bytes."""
    rows = [_entry_dict(p, manifest.entries[p]) for p in sorted(manifest.entries, key=path_bytes)]
    payload = {"schema": CONTENT_SCHEMA, "entries": rows}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def content_hash(manifest: Manifest) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def _fact_dict(path: str, fact: Fact) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": fact.kind, "items": [list(i) for i in fact.items]}
    _put_text(out, "path", path)
    return out


def summary_to_json(summary: LayerSummary) -> str:
    payload = {
        "schema": SUMMARY_SCHEMA,
        "entries": [_entry_dict(p, e) for p, e in summary.entries.items()],
        "whiteouts": [_text_dict(p) for p in sorted(summary.whiteouts, key=path_bytes)],
        "opaque": [_text_dict(p) for p in sorted(summary.opaque, key=path_bytes)],
        "facts": [_fact_dict(p, f) for p, f in summary.facts.items()],
    }
    # Facts may carry undecodable text from file contents: keep them lossless as surrogates.
    return json.dumps(payload, separators=(",", ":"))


def _text_dict(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_text(out, "path", path)
    return out


def summary_from_json(text: str) -> LayerSummary:
    try:
        data = json.loads(text)
        if data.get("schema") != SUMMARY_SCHEMA:
            raise ContentError(f"summary schema {data.get('schema')!r}, not {SUMMARY_SCHEMA}")
        entries = dict(_entry_from(e) for e in data["entries"])
        return LayerSummary(
            entries=entries,
            whiteouts=frozenset(_get_text(w, "path") for w in data["whiteouts"]),
            opaque=frozenset(_get_text(o, "path") for o in data["opaque"]),
            facts={
                _get_text(f, "path"): Fact(
                    str(f["kind"]), tuple(tuple(str(x) for x in i) for i in f["items"])
                )
                for f in data["facts"]
            },
        )
    except ContentError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ContentError(f"unreadable layer summary: {exc}") from exc


def summaries_by_diff_id(
    diff_ids: Sequence[str], summaries: Mapping[str, LayerSummary]
) -> list[LayerSummary]:
    """The summaries for an image's layers, bottom first; a missing one is an error."""
    missing = [d for d in diff_ids if d not in summaries]
    if missing:
        raise ContentError(f"no summary for layer {missing[0]}")
    return [summaries[d] for d in diff_ids]
