"""Debian bases for real: mmdebstrap from Debian's mirror, the real engine, the target probe.

One base is built twice in the whole module (the bit-identical check); everything else reuses
it. What the module imports carries `envd.test=1` and is removed at the end.
"""

from __future__ import annotations

import hashlib
import io
import platform
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.errors import LockError
from envd.gateways import mmdebstrap
from envd.gateways.engine import Engine, RunResult
from envd.model.lockfile import BaseLock
from envd.model.target import inspect_target
from envd.services import debian_base

pytestmark = pytest.mark.integration

TEST_LABELS = {"envd.test": "1"}
SUITE = "bookworm"


@dataclass
class Built:
    engine: Engine
    cache: Path
    repository: str
    lock: BaseLock
    cold_s: float
    again_sha256: str
    again_path: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, engine: None) -> Iterator[Built]:
    """The base made once through ensure_debian_base and once more by mmdebstrap directly."""
    root = tmp_path_factory.mktemp("debian-base")
    real = Engine(extra_labels=TEST_LABELS)
    # A repository of its own, so removing it never takes a base another test run uses.
    repository = f"envd-test-{uuid.uuid4().hex[:8]}/base-debian"
    made: list[str] = []
    try:
        started = time.monotonic()
        lock = debian_base.ensure_debian_base(
            real,
            SUITE,
            [],
            debian_base.DEFAULT_MIRROR,
            root / "cache",
            labels=TEST_LABELS,
            repository=repository,
        )
        cold_s = time.monotonic() - started
        made.append(lock.reference)
        again = root / "again.tar"
        mmdebstrap.build_tarball(
            SUITE,
            debian_base.include_list([]),
            debian_base.DEFAULT_MIRROR,
            again,
            source_date_epoch=debian_base.SOURCE_DATE_EPOCH,
        )
        yield Built(real, root / "cache", repository, lock, cold_s, sha256(again), again)
    finally:
        for ref in made:
            real.remove_image(ref, force=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def test_same_packages_give_a_bit_identical_tarball(built: Built) -> None:
    assert built.again_sha256 == built.lock.tarball_sha256
    print(f"mmdebstrap + import, cold: {built.cold_s:.1f}s")


def test_tarball_has_no_host_specific_files(built: Built) -> None:
    with tarfile.open(built.again_path) as tar:
        names = set(tar.getnames())
    assert "./usr/bin/python3" in names
    for host_file in ("./etc/hostname", "./etc/resolv.conf", "./var/log/dpkg.log"):
        assert host_file not in names
    assert not [n for n in names if n.startswith("./var/lib/apt/lists/") and "_" in n]


def test_lock_pins_the_exact_package_set(built: Built) -> None:
    lock = built.lock
    assert lock.kind == "debian" and lock.suite == SUITE
    assert lock.mirror == debian_base.DEFAULT_MIRROR
    assert lock.digest == lock.tarball_sha256
    assert lock.reference == f"{built.repository}:{lock.tarball_sha256[7:19]}"
    versions = {p.name: p.version for p in lock.packages}
    assert {"python3", "python3-venv", "ca-certificates", "libc6", "dpkg"} <= versions.keys()
    assert versions["python3"].startswith("3.11.")
    assert all(p.version and p.arch for p in lock.packages)
    assert lock.packages == mmdebstrap.list_packages(built.again_path)


def test_image_is_imported_with_its_labels(built: Built) -> None:
    image = built.engine.inspect_image(built.lock.reference)
    assert image is not None
    assert image.labels["envd.base.tarball-sha256"] == built.lock.tarball_sha256
    assert image.labels["envd.base.suite"] == SUITE
    assert image.labels["envd.test"] == "1"


def test_second_ensure_runs_no_mmdebstrap(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mmdebstrap ran for a cached base")

    monkeypatch.setattr(mmdebstrap, "build_tarball", refuse)
    again = debian_base.ensure_debian_base(
        built.engine,
        SUITE,
        ["python3"],
        debian_base.DEFAULT_MIRROR,
        built.cache,
        labels=TEST_LABELS,
        repository=built.repository,
    )
    assert again == built.lock  # (and mmdebstrap never ran: `refuse`)


@dataclass
class CountingEngine:
    engine: Engine
    runs: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, image: str, argv: Sequence[str], *, network: bool = True) -> RunResult:
        self.runs.append(tuple(argv))
        return self.engine.run(image, argv, network=network)


@dataclass
class DictCache:
    data: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str) -> None:
        self.data[key] = value


def test_inspect_target_reads_the_base_once(built: Built) -> None:
    engine, cache = CountingEngine(built.engine), DictCache()
    key = f"target:{built.lock.digest}"
    target = inspect_target(engine, built.lock.reference, cache=cache, cache_key=key)
    assert target.python_version.startswith("3.11.")
    assert target.glibc == "2.36"
    assert target.platform == f"manylinux_2_36_{platform.machine()}"
    assert len(engine.runs) == 1
    assert inspect_target(engine, built.lock.reference, cache=cache, cache_key=key) == target
    assert len(engine.runs) == 1  # the second answer came from the cache: no container ran


def test_base_without_python_is_a_lock_error(built: Built, tmp_path: Path) -> None:
    tar_path = tmp_path / "nopython.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo("etc/os-release")
        data = b'ID="empty"\n'
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    repository, tag = f"{built.repository}-nopython", "1"
    built.engine.import_tarball(tar_path, repository, tag, labels=TEST_LABELS)
    try:
        with pytest.raises(LockError, match="has no python3") as caught:
            inspect_target(
                built.engine, f"{repository}:{tag}", cache=DictCache(), cache_key="target:x"
            )
        assert caught.value.hint and "debian" in caught.value.hint
    finally:
        built.engine.remove_image(f"{repository}:{tag}", force=True)


def test_unknown_package_is_named(tmp_path: Path, engine: None) -> None:
    with pytest.raises(LockError) as caught:
        debian_base.ensure_debian_base(
            Engine(extra_labels=TEST_LABELS),
            SUITE,
            ["no-such-package-xyz"],
            debian_base.DEFAULT_MIRROR,
            tmp_path,
            labels=TEST_LABELS,
        )
    assert caught.value.message == f"Debian package `no-such-package-xyz` is not in {SUITE}"
    assert caught.value.hint and "system:" in caught.value.hint
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock"]
