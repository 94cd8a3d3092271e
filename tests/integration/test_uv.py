"""envd.gateways.uv against the real uv and PyPI (through the host's CA bundle)."""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from envd.errors import LockError
from envd.gateways import uv
from envd.model.lockfile import PythonPackage

pytestmark = pytest.mark.integration

TARGET = {"python_version": "3.11.2", "platform": "manylinux_2_36_x86_64"}


@pytest.fixture
def cache_dir() -> str:
    return str(Path(os.environ.get("ENVD_CACHE", "/tmp/envd-test-cache")) / "uv")


def resolve(requirements: list[str], cache_dir: str, **kwargs: object) -> dict[str, PythonPackage]:
    args: dict[str, object] = {"indexes": (), "cache_dir": cache_dir, **TARGET, **kwargs}
    packages = uv.resolve(requirements, **args)  # type: ignore[arg-type]
    return {p.name: p for p in packages}


def test_uv_version() -> None:
    assert Version(uv.uv_version()) >= Version("0.5")


def test_resolve_pins_versions_and_hashes(cache_dir: str) -> None:
    first = resolve(["numpy>=1.26", "PyYAML"], cache_dir)
    assert set(first) == {"numpy", "pyyaml"}
    assert Version(first["numpy"].version) >= Version("1.26")
    for package in first.values():
        assert package.hashes and list(package.hashes) == sorted(package.hashes)
        assert all(h.startswith("sha256:") and len(h) == 71 for h in package.hashes)
        assert package.index == ""
    assert resolve(["numpy>=1.26", "PyYAML"], cache_dir) == first


def test_a_pin_that_still_fits_is_kept(cache_dir: str) -> None:
    previous = (
        PythonPackage("numpy", "1.26.4", ()),
        PythonPackage("pyyaml", "6.0.1", ()),
    )
    kept = resolve(["numpy>=1.26", "pyyaml"], cache_dir, preferences=previous)
    assert (kept["numpy"].version, kept["pyyaml"].version) == ("1.26.4", "6.0.1")

    only_numpy = resolve(
        ["numpy>=1.26", "pyyaml"], cache_dir, preferences=previous, upgrade_packages=["numpy"]
    )
    assert Version(only_numpy["numpy"].version) > Version("1.26.4")
    assert only_numpy["pyyaml"].version == "6.0.1"

    upgraded = resolve(["numpy>=1.26", "pyyaml"], cache_dir, preferences=previous, upgrade=True)
    assert Version(upgraded["numpy"].version) > Version("1.26.4")
    assert Version(upgraded["pyyaml"].version) > Version("6.0.1")


def test_a_pin_that_no_longer_fits_moves(cache_dir: str) -> None:
    moved = resolve(["numpy>=2"], cache_dir, preferences=(PythonPackage("numpy", "1.26.4", ()),))
    assert Version(moved["numpy"].version) >= Version("2")


def test_the_target_python_decides(cache_dir: str) -> None:
    old = resolve(["numpy"], cache_dir, python_version="3.9.2")
    assert Version(old["numpy"].version) < Version("2.1")  # numpy 2.1 needs Python 3.10


def test_a_conflict_names_the_package(cache_dir: str) -> None:
    with pytest.raises(LockError, match=r"cannot resolve numpy for Python 3\.11\.2") as info:
        resolve(["numpy<1.20", "numpy>=1.26"], cache_dir)
    assert "numpy<1.20 and numpy>=1.26" in info.value.message


def test_an_unknown_package_is_named(cache_dir: str) -> None:
    name = "envd-surely-no-such-package-3f9a1c"
    with pytest.raises(LockError, match=f"cannot resolve {name} for") as info:
        resolve([name], cache_dir)
    assert "not found in the package registry" in info.value.message


def test_an_unreachable_index_is_named(cache_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    with pytest.raises(LockError, match=r"http://127\.0\.0\.1:9/simple cannot be reached"):
        resolve(["numpy"], cache_dir, indexes=["http://127.0.0.1:9/simple"])


def _write_wheel(index: Path) -> None:
    """A one-file wheel `envd-probe-pkg` (needs pyyaml) in a PEP 503 index at `index`."""
    dist, version = "envd_probe_pkg", "0.1.0"
    files = {
        f"{dist}/__init__.py": b"",
        f"{dist}-{version}.dist-info/METADATA": b"Metadata-Version: 2.1\n"
        b"Name: envd-probe-pkg\nVersion: 0.1.0\nRequires-Dist: pyyaml\n",
        f"{dist}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")

    record = [f"{path},sha256={digest(data)},{len(data)}" for path, data in files.items()]
    files[f"{dist}-{version}.dist-info/RECORD"] = "\n".join([*record, ""]).encode()
    project = index / "envd-probe-pkg"
    project.mkdir(parents=True)
    wheel = project / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), data)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (project / "index.html").write_text(f'<a href="{wheel.name}#sha256={sha}">{wheel.name}</a>')
    (index / "index.html").write_text('<a href="envd-probe-pkg/">envd-probe-pkg</a>')


@pytest.fixture
def local_index(tmp_path: Path) -> Iterator[str]:
    """A package index served on loopback."""
    _write_wheel(tmp_path / "simple")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_index_of_each_package_is_recorded(cache_dir: str, local_index: str) -> None:
    packages = resolve(["envd-probe-pkg"], cache_dir, indexes=[local_index])
    assert set(packages) == {"envd-probe-pkg", "pyyaml"}
    assert packages["envd-probe-pkg"].index == local_index
    assert packages["envd-probe-pkg"].version == "0.1.0"
    assert len(packages["envd-probe-pkg"].hashes) == 1
    assert packages["pyyaml"].index == ""
