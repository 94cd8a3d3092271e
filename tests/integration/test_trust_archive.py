"""`envctl load` on crafted archives, on the real engine (issue 24: F3, F6, F14), and warm
containers started from the recorded image ID."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import threading
import uuid
import zlib
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

ZEROS = 3 << 30  # the bomb's member: 3 GiB of zeros, about 3 MB once gzipped


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True)


def header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    return info.tobuf(tarfile.GNU_FORMAT)


def padding(size: int) -> bytes:
    return b"\0" * (-size % 512)


def member(name: str, data: bytes) -> bytes:
    return header(name, len(data)) + data + padding(len(data))


def zeros_gzip(n: int) -> bytes:
    """One gzip member of n zero bytes, compressed as it is made (never n bytes in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block, out = bytes(1 << 20), io.BytesIO()
    for _ in range(n // len(block)):
        out.write(compressor.compress(block))
    out.write(compressor.flush())
    return out.getvalue()


def tmp_bytes(home: Path) -> int:
    folder = home / "tmp"
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def load_watching_tmp(
    envctl: Envctl, archive: Path
) -> tuple[subprocess.CompletedProcess[str], int]:
    """`envctl load archive`, and the most $ENVD_HOME/tmp held while it ran."""
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tmp_bytes(envctl.home))
            except OSError:  # a file went between the listing and its stat
                pass
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc = envctl("load", str(archive), timeout=300)
    finally:
        done.set()
        watcher.join()
    return proc, peak[0]


def test_a_second_manifest_cannot_tag_anything(
    shared: Envctl, default_project: Path, tmp_path: Path
) -> None:
    """F3: a real `envctl share image --output` archive, with `./manifest.json` appended to its
    image.tar naming a victim tag and envd-share.json's sha256 fixed to match."""
    archive = tmp_path / "dflt.tar.gz"
    shared.ok("share", "image", str(default_project), "--output", str(archive))
    image = tmp_path / "image.tar"
    with tarfile.open(archive, "r:gz") as outer:
        meta = json.load(outer.extractfile("envd-share.json"))  # type: ignore[arg-type]
        fingerprint = outer.extractfile("fingerprint.json").read()  # type: ignore[union-attr]
        with outer.extractfile("image.tar") as src, open(image, "wb") as dst:  # type: ignore[union-attr]
            shutil.copyfileobj(src, dst, 1 << 20)
    victim = f"envd-test-victim-{uuid.uuid4().hex[:8]}/dflt:deadbeef"
    with tarfile.open(image) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    with tarfile.open(image, "a") as tar:
        evil = json.dumps([dict(manifest[0], RepoTags=[victim])]).encode()
        info = tarfile.TarInfo("./manifest.json")
        info.size = len(evil)
        tar.addfile(info, io.BytesIO(evil))
    digest = hashlib.sha256()
    with open(image, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    meta["image_sha256"] = digest.hexdigest()
    crafted = tmp_path / "crafted.tar.gz"
    with tarfile.open(crafted, "w:gz", compresslevel=1) as out:
        for name, data in (
            ("envd-share.json", json.dumps(meta).encode()),
            ("fingerprint.json", fingerprint),
        ):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            out.addfile(entry, io.BytesIO(data))
        out.add(image, "image.tar")
    try:
        proc = shared("load", str(crafted))
        assert proc.returncode == 9, proc.stderr
        assert "manifest.json appears twice" in proc.stderr and "refused" in proc.stderr
        assert docker("image", "inspect", victim).returncode != 0  # no tag was made
    finally:
        docker("rmi", victim)


@pytest.mark.parametrize("where", ["an unknown member", "a layer"])
def test_a_gzip_bomb_is_refused_with_little_written(
    shared: Envctl, tmp_path: Path, where: str
) -> None:
    """F6: 3 GiB of zeros (about 3 MB gzipped) as an extra member of the archive, or as a layer
    inside its image.tar; the refusal comes with $ENVD_HOME/tmp holding little."""
    meta = member("envd-share.json", json.dumps({"image_sha256": "0" * 64}).encode())
    if where == "an unknown member":
        head = meta + header("pad", ZEROS)
        tail = padding(ZEROS) + b"\0" * 1024
    else:
        inner = 512 + ZEROS + 1024
        head = meta + header("image.tar", inner) + header("l0/layer.tar", ZEROS)
        tail = b"\0" * 1024 + padding(inner) + b"\0" * 1024
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(head) + zeros_gzip(ZEROS) + gzip.compress(tail))
    assert bomb.stat().st_size < 8 << 20
    proc, peak = load_watching_tmp(shared, bomb)
    if where == "an unknown member":
        assert proc.returncode == 9, proc.stderr
        assert "member pad is not part of an envd archive" in proc.stderr
    else:
        assert proc.returncode == 8, proc.stderr
        assert "compression bomb" in proc.stderr
    assert peak < 256 << 20, f"$ENVD_HOME/tmp grew to {peak} bytes"
    assert tmp_bytes(shared.home) == 0


def small_image(manifest: bytes) -> bytes:
    """A tiny `docker save` tar whose manifest.json is `manifest`."""
    layer = member("etc/hello", b"hello") + b"\0" * 1024
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}
    ).encode()
    hexid = hashlib.sha256(config).hexdigest()
    return (
        member("l0/layer.tar", layer)
        + member(f"{hexid}.json", config)
        + member("manifest.json", manifest)
        + b"\0" * 1024
    )


@pytest.mark.parametrize(
    "manifest",
    [b"[{}]", b"[1]", b'[{"Config": "nope.json", "Layers": []}]', b'[{"Config": 5, "Layers": 7}]'],
)
def test_a_malformed_manifest_is_a_refusal(shared: Envctl, tmp_path: Path, manifest: bytes) -> None:
    """F14: each was an internal error (exit 3)."""
    image = small_image(manifest)
    meta = json.dumps({"image_sha256": hashlib.sha256(image).hexdigest()}).encode()
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(
        gzip.compress(member("envd-share.json", meta) + member("image.tar", image) + b"\0" * 1024)
    )
    proc = shared("load", str(archive))
    assert proc.returncode == 9, proc.stderr
    assert "manifest.json is refused" in proc.stderr and "internal error" not in proc.stderr


def test_a_warm_container_runs_the_recorded_image_id(shared: Envctl, default_project: Path) -> None:
    """F3's last step: enter started the warm container by tag, so a moved tag ran there."""
    shared.ok("enter", str(default_project), "--", "true")
    listed = json.loads(shared.ok("--json", "ps"))
    containers = [c for c in listed.get("containers", []) if c.get("project") == "dflt"]
    assert containers, listed
    cid = containers[0].get("container_id") or containers[0].get("containerId")
    started_from = docker("inspect", "--format", "{{.Config.Image}}", cid).stdout.strip()
    recorded = json.loads(shared.ok("--json", "ls"))["projects"]
    tag = next(p["image"] for p in recorded if p["path"] == str(default_project))
    image_id = docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    assert started_from == image_id and started_from.startswith("sha256:")
