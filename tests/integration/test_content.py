"""The content hash of images on the real engine, from the layer bytes `docker save` gives."""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from envd.gateways.engine import Engine, SavedImage
from envd.model.content import content_hash, manifest_from_tars
from envd.model.inventory import Change, diff_manifests
from envd.services.content import ContentHasher
from tests.conftest import SESSION_LABEL

pytestmark = pytest.mark.integration

SIX = "usr/lib/python3/dist-packages/six.py"
DIST = "usr/lib/python3/dist-packages/six-1.16.0.dist-info"


def rootfs(*, six: bytes = b"six = 1\n", mtime: int = 0) -> bytes:
    """A tiny root filesystem tar; mtime changes the tar's bytes but not its content."""
    files = {
        "etc/os-release": (b"ID=debian\nVERSION_ID=12\n", 0o644),
        "bin/tool": (b"#!/bin/sh\necho tool\n", 0o755),
        SIX: (six, 0o644),
        f"{DIST}/METADATA": (b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\n", 0o644),
        f"{DIST}/RECORD": (b"six.py,,\nsix-1.16.0.dist-info/METADATA,,\n", 0o644),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)})
        for d in dirs:
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tar.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, mtime
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("bin/tool-link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "tool", mtime
        tar.addfile(link)
    return buf.getvalue()


class CountingEngine(Engine):
    """The real engine, counting how many times layer bytes are read; remembers what it made."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer_reads = 0
        self.made: list[str] = []

    def read_image_layers(self, *args: Any, **kwargs: Any) -> SavedImage[Any]:
        saved = super().read_image_layers(*args, **kwargs)
        self.layer_reads += sum(layer is not None for layer in saved.layers)
        return saved


@pytest.fixture(scope="module")
def real_engine(engine: None) -> Iterator[CountingEngine]:
    key, _, value = SESSION_LABEL.partition("=")
    gateway = CountingEngine(extra_labels={key: value})
    yield gateway
    for image in gateway.made:
        gateway.remove_image(image, force=True)


def import_image(gateway: CountingEngine, tmp_path: Path, data: bytes, tag: str) -> str:
    path = tmp_path / f"{tag}.tar"
    path.write_bytes(data)
    image_id = gateway.import_tarball(
        path, "envd-test-content", f"{tag}-{uuid.uuid4().hex[:8]}", labels={"tag": tag}
    )
    gateway.made.append(image_id)
    return image_id


def pure_hash(*tars: bytes) -> str:
    streams: list[IO[bytes]] = [io.BytesIO(t) for t in tars]
    return content_hash(manifest_from_tars(streams))


def test_service_hash_equals_the_pure_computation(
    real_engine: CountingEngine, tmp_path: Path
) -> None:
    data = rootfs()
    image = import_image(real_engine, tmp_path, data, "pure")
    hasher = ContentHasher(real_engine, tmp_path / "cache")
    assert hasher.content_hash(image) == pure_hash(data)
    assert hasher.content_hash(image) != pure_hash(rootfs(six=b"six = 2\n"))


def test_equal_content_gives_equal_hash_across_image_ids(
    real_engine: CountingEngine, tmp_path: Path
) -> None:
    first = import_image(real_engine, tmp_path, rootfs(), "same-a")
    other_times = import_image(real_engine, tmp_path, rootfs(mtime=1_700_000_000), "same-b")
    assert first != other_times
    layers = [real_engine.inspect_image(i) for i in (first, other_times)]
    assert layers[0] and layers[1] and layers[0].layers != layers[1].layers  # other bytes ...
    hasher = ContentHasher(real_engine, tmp_path / "cache")
    assert hasher.content_hash(first) == hasher.content_hash(other_times)  # ... same content


def test_an_edited_byte_changes_the_hash_and_the_diff_names_the_file(
    real_engine: CountingEngine, tmp_path: Path
) -> None:
    before = import_image(real_engine, tmp_path, rootfs(), "edit-a")
    after = import_image(real_engine, tmp_path, rootfs(six=b"six = 9\n"), "edit-b")
    hasher = ContentHasher(real_engine, tmp_path / "cache")
    assert hasher.content_hash(before) != hasher.content_hash(after)
    changes = diff_manifests(hasher.image_manifest(before), hasher.image_manifest(after))
    assert changes == [Change("/" + SIX, "modified", "python:six")]


def test_a_second_call_reads_no_layer_bytes(real_engine: CountingEngine, tmp_path: Path) -> None:
    image = import_image(real_engine, tmp_path, rootfs(six=b"cached\n"), "cache")
    cache = tmp_path / "cache"
    reads = real_engine.layer_reads
    first = ContentHasher(real_engine, cache).content_hash(image)
    assert real_engine.layer_reads == reads + 1
    again = ContentHasher(real_engine, cache).content_hash(image)  # a new hasher, same cache
    assert again == first
    assert real_engine.layer_reads == reads + 1
    entries = sorted(cache.glob("*.json"))
    assert len(entries) == 1  # one layer: its summary (beside it, its size; chains/ its hash)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in cache.iterdir() if f.is_file())
    # A damaged cache entry is read again from the engine, not trusted.
    shutil.rmtree(cache / "chains")
    entries[0].write_text("{not json")
    assert ContentHasher(real_engine, cache).content_hash(image) == first
    assert real_engine.layer_reads == reads + 2
