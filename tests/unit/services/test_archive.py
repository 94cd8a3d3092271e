"""`envctl load` archives: parsed once, bounded, rebuilt for the engine (F3, F6, F14)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envd.errors import EnvdError, RegistryError, VerificationError
from envd.events import EventBus
from envd.gateways.engine import ImageInfo
from envd.services.archives import (
    BOUNDS,
    Bounds,
    read_archive,
    read_image_tar,
    rebuilt_image_tar,
)
from envd.services.fingerprints import ENV_LABEL
from envd.services.sharing import Sharing


def tar_bytes(members: list[tuple[str, bytes | tarfile.TarInfo]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            if isinstance(data, tarfile.TarInfo):
                data.name = name
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def layer(text: str = "hello") -> bytes:
    return tar_bytes([("etc/hello", text.encode())])


def image_members(
    layers: list[bytes] | None = None, tags: list[str] | None = None
) -> tuple[list[tuple[str, bytes | tarfile.TarInfo]], str]:
    """The members of a legacy `docker save` tar, and its image id."""
    layers = [layer()] if layers is None else layers
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    hexid = hashlib.sha256(config).hexdigest()
    members: list[tuple[str, bytes | tarfile.TarInfo]] = []
    for i, data in enumerate(layers):
        members += [(f"l{i}/VERSION", b"1.0"), (f"l{i}/json", b"{}"), (f"l{i}/layer.tar", data)]
    manifest = [
        {
            "Config": f"{hexid}.json",
            "RepoTags": tags or ["envd/p:1"],
            "Layers": [f"l{i}/layer.tar" for i in range(len(layers))],
        }
    ]
    members += [
        (f"{hexid}.json", config),
        ("manifest.json", json.dumps(manifest).encode()),
        ("repositories", b'{"envd/p": {"1": "x"}}'),
    ]
    return members, f"sha256:{hexid}"


def outer(
    image: bytes,
    extra: list[tuple[str, bytes | tarfile.TarInfo]] | None = None,
    level: int = 1,
    **meta: Any,
) -> bytes:
    record = {"image_sha256": hashlib.sha256(image).hexdigest(), "environment_hash": "e1"}
    record.update(meta)
    members: list[tuple[str, bytes | tarfile.TarInfo]] = [
        ("envd-share.json", json.dumps(record).encode()),
        ("fingerprint.json", b"{}"),
        ("image.tar", image),
        *(extra or []),
    ]
    return gzip.compress(tar_bytes(members), compresslevel=level)


def parse(data: bytes, spool: Path, bounds: Bounds = BOUNDS) -> Any:
    spool.mkdir(exist_ok=True)
    return read_archive(io.BytesIO(data), spool, "x.tar.gz", bounds)


def untar(chunks: Iterator[bytes]) -> dict[str, bytes]:
    data = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_the_engine_gets_config_and_layers_only_without_tags(tmp_path: Path) -> None:
    members, image_id = image_members([layer("a"), layer("b"), layer("a")])
    loaded = parse(outer(tar_bytes(members)), tmp_path / "spool")
    assert loaded.image_id == image_id and loaded.meta["environment_hash"] == "e1"
    got = untar(rebuilt_image_tar(loaded))
    hexid = image_id.removeprefix("sha256:")
    assert set(got) == {"manifest.json", f"{hexid}.json", "000/layer.tar", "001/layer.tar"}
    manifest = json.loads(got["manifest.json"])
    assert manifest == [
        {
            "Config": f"{hexid}.json",
            "RepoTags": None,
            "Layers": ["000/layer.tar", "001/layer.tar", "000/layer.tar"],
        }
    ]
    assert got["001/layer.tar"] == layer("b")


@pytest.mark.parametrize(
    "name", ["./manifest.json", "/manifest.json", "l0/../manifest.json", ".//manifest.json"]
)
def test_a_second_manifest_under_another_spelling_is_refused(tmp_path: Path, name: str) -> None:
    """F3: the engine cleans member names, so `./manifest.json` would be its manifest."""
    members, _ = image_members()
    evil = [{"Config": members[3][0], "RepoTags": ["envd/victim:1"], "Layers": ["l0/layer.tar"]}]
    members.append((name, json.dumps(evil).encode()))
    with pytest.raises(VerificationError, match=r"member manifest.json appears twice"):
        parse(outer(tar_bytes(members)), tmp_path / "spool")


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("evil.sh", tarfile.REGTYPE, "is not part of an image archive"),
        ("l0/run.sh", tarfile.REGTYPE, "is not part of an image archive"),
        ("../escape", tarfile.REGTYPE, "is not a name inside the archive"),
        ("l0/hard", tarfile.LNKTYPE, "is a link, a device"),
        ("l0/sym", tarfile.SYMTYPE, "is a link, a device"),
        ("dev", tarfile.CHRTYPE, "is a link, a device"),
        ("l0/sub", tarfile.DIRTYPE, "is a folder envd does not expect"),
        ("l1/layer.tar", tarfile.GNUTYPE_SPARSE, "or a sparse file"),
    ],
)
def test_unknown_members_links_and_devices_are_refused(
    tmp_path: Path, name: str, kind: bytes, why: str
) -> None:
    members, _ = image_members()
    info = tarfile.TarInfo()
    info.type, info.linkname = kind, "manifest.json"
    members.insert(0, (name, info if kind != tarfile.REGTYPE else b"x"))
    with pytest.raises(VerificationError, match=why):
        parse(outer(tar_bytes(members)), tmp_path / "spool")


def test_an_unknown_outer_member_is_refused_before_its_bytes_are_read(tmp_path: Path) -> None:
    members, _ = image_members()
    zeros = gzip.compress(b"\0" * (8 << 20))  # stands in for a bomb: never decompressed
    data = outer(tar_bytes(members), [("pad", zeros)])
    with pytest.raises(VerificationError, match="member pad is not part of an envd archive"):
        parse(data, tmp_path / "spool")
    with pytest.raises(VerificationError, match=r"member image\.tar appears twice"):
        parse(outer(tar_bytes(members), [("./image.tar", b"")]), tmp_path / "spool2")


def test_a_gzip_bomb_is_refused_having_written_little(tmp_path: Path) -> None:
    """F6: 64 MiB of zeros in a layer, about 64 KiB compressed; the bound is a ratio past a
    slack (1 MiB here, 64 MiB by default), so the refusal comes before much is spooled."""
    members, _ = image_members([b"\0" * (64 << 20)])
    bounds = Bounds(slack=1 << 20)
    with pytest.raises(RegistryError, match="compression bomb"):
        parse(outer(tar_bytes(members), level=9), tmp_path / "spool", bounds)
    written = sum(p.stat().st_size for p in (tmp_path / "spool").iterdir())
    assert written < 4 << 20


@pytest.mark.parametrize(
    ("bounds", "why"),
    [
        (Bounds(total=256 << 10), "unpacks to more than"),
        (Bounds(compressed=1 << 10), "is larger than"),
        (Bounds(member=1 << 10), "is larger than"),
        (Bounds(members=3), "is past the bound of 3 members"),
    ],
)
def test_each_bound_is_a_refusal(tmp_path: Path, bounds: Bounds, why: str) -> None:
    members, _ = image_members([bytes(range(256)) * 2048])
    with pytest.raises(EnvdError, match=why):
        parse(outer(tar_bytes(members)), tmp_path / "spool", bounds)


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        (b"[{}]", "`Config` is missing"),
        (b"[1]", "its entry is not a JSON object"),
        (b'[{"Config": "nope.json", "Layers": []}]', "which the archive does not hold"),
        (b'[{"Config": 5, "Layers": "x"}]', "`Config` is missing or not a string"),
        (b'[{"Config": "a.json", "Layers": "x"}]', "`Layers` is missing or not a list"),
        (b'{"Config": "a.json"}', "exactly one image"),
        (b"[" * 100_000, "not JSON"),
        (b'[{"Config": "/etc/passwd", "Layers": []}]', "absolute path"),
    ],
)
def test_malformed_manifests_are_refusals_not_internal_errors(
    tmp_path: Path, manifest: bytes, why: str
) -> None:
    """F14: each of these was a KeyError or TypeError (exit 3)."""
    members, _ = image_members()
    members = [(n, manifest if n == "manifest.json" else d) for n, d in members]
    with pytest.raises(VerificationError, match=why) as caught:
        parse(outer(tar_bytes(members)), tmp_path / "spool")
    assert caught.value.exit_code == 9


def test_a_layer_that_does_not_hash_to_its_diff_id_is_refused(tmp_path: Path) -> None:
    members, _ = image_members()
    members = [(n, layer("other") if n == "l0/layer.tar" else d) for n, d in members]
    with pytest.raises(VerificationError, match="hashes to sha256:"):
        parse(outer(tar_bytes(members)), tmp_path / "spool")


def test_a_corrupt_or_mismatched_archive_is_a_registry_error(tmp_path: Path) -> None:
    members, _ = image_members()
    image = tar_bytes(members)
    good = outer(image)
    with pytest.raises(RegistryError, match="corrupt or truncated"):
        parse(good[: len(good) // 2], tmp_path / "s1")
    with pytest.raises(RegistryError, match="does not match its recorded sha256"):
        parse(outer(image, image_sha256="0" * 64), tmp_path / "s2")
    with pytest.raises(RegistryError, match="corrupt or truncated"):
        parse(b"\x1f\x8b" + bytes(100), tmp_path / "s3")
    # A layer changed in transit is corruption (8), not a manifest refused (9).
    changed = [(n, layer("other") if n == "l0/layer.tar" else d) for n, d in members]
    sha = hashlib.sha256(image).hexdigest()
    with pytest.raises(RegistryError, match="does not match its recorded sha256"):
        parse(outer(tar_bytes(changed), image_sha256=sha), tmp_path / "s4")


def test_an_image_tar_alone_parses(tmp_path: Path) -> None:
    members, image_id = image_members()
    loaded = read_image_tar(io.BytesIO(tar_bytes(members)), tmp_path, "image.tar")
    assert loaded.image_id == image_id


class LoadingEngine:
    """Records what `load` was handed; the image it 'loads' carries a label of our choosing."""

    def __init__(self, image_id: str, label: str) -> None:
        self.image_id, self.label = image_id, label
        self.handed: Any = None
        self.received = b""
        self.loaded = False
        self.tagged: list[tuple[str, str, str]] = []
        self.removed: list[str] = []

    def image_ids(self) -> set[str]:
        return {self.image_id} if self.loaded else set()

    def load(self, archive: Iterator[bytes]) -> list[str]:
        self.handed = archive
        self.received = b"".join(archive)
        self.loaded = True
        return [f"Loaded image ID: {self.image_id}"]

    def loaded_image(self, config_id: str, loaded: list[str]) -> str:
        return config_id  # the classic store: the ID is the config's digest

    def inspect_image(self, ref: str) -> ImageInfo | None:
        if not self.loaded or ref != self.image_id:
            return None
        return ImageInfo(self.image_id, (), {ENV_LABEL: self.label}, 1, (), ())

    def tag(self, image: str, repository: str, tag: str) -> None:
        self.tagged.append((image, repository, tag))

    def remove_image(self, ref: str, *, force: bool = False) -> bool:
        self.removed.append(ref)
        return True


def test_load_streams_a_rebuilt_archive_and_a_refusal_tags_nothing(tmp_path: Path) -> None:
    members, image_id = image_members(tags=["envd/victim:1"])
    path = tmp_path / "x.tar.gz"
    path.write_bytes(outer(tar_bytes(members)))
    engine = LoadingEngine(image_id, label="not-e1")
    sharing = Sharing(engine, None, None, None, EventBus(), scratch=tmp_path / "tmp")  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="disagree"):
        sharing.load(path, lambda p: None)
    assert not isinstance(engine.handed, bytes | bytearray) and iter(engine.handed) is engine.handed
    with tarfile.open(fileobj=io.BytesIO(engine.received)) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "repositories" not in names and manifest[0]["RepoTags"] is None
    assert engine.tagged == [] and engine.removed == [image_id]
    assert list((tmp_path / "tmp").iterdir()) == []  # the spool went with the load


def test_the_oci_layout_is_read_too(tmp_path: Path) -> None:
    """What newer engines' `docker save` writes: blobs/sha256/*, index.json, oci-layout."""
    data = layer("oci")
    layer_hex = hashlib.sha256(data).hexdigest()
    config = json.dumps({"rootfs": {"diff_ids": [f"sha256:{layer_hex}"]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": ["envd/victim:1"],
            "Layers": [f"blobs/sha256/{layer_hex}"],
        }
    ]
    directory = tarfile.TarInfo()
    directory.type = tarfile.DIRTYPE
    members: list[tuple[str, bytes | tarfile.TarInfo]] = [
        ("blobs", directory),
        ("blobs/sha256", tarfile.TarInfo()),
        (f"blobs/sha256/{layer_hex}", data),
        (f"blobs/sha256/{config_hex}", config),
        ("index.json", b'{"manifests": [{"annotations": {"io.containerd.image.name": "x"}}]}'),
        ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
        ("manifest.json", json.dumps(manifest).encode()),
    ]
    members[1][1].type = tarfile.DIRTYPE  # type: ignore[union-attr]
    loaded = parse(outer(tar_bytes(members)), tmp_path / "spool")
    assert loaded.image_id == f"sha256:{config_hex}"
    got = untar(rebuilt_image_tar(loaded))
    assert set(got) == {"manifest.json", f"{config_hex}.json", "000/layer.tar"}
    assert json.loads(got["manifest.json"])[0]["RepoTags"] is None
