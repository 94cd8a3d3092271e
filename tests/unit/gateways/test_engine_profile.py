"""What the engine is (product, API, image store) is read once per daemon start and said in
`envctl info`; a containerd-store save (gzip layers in an OCI layout) is written uncompressed,
each layer checked against the config's diff-ids."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest

from envd.errors import RegistryError, VerificationError
from envd.gateways.engine import (
    CLASSIC_STORE,
    CONTAINERD_STORE,
    Engine,
    engine_product,
    engine_rootless,
    image_store,
    read_saved_image,
    uncompress_saved_image,
)
from envd.model.content import summarise_layer

DOCKER_20_INFO = {
    "DriverStatus": [["Backing Filesystem", "extfs"], ["Native Overlay Diff", "true"]]
}
DOCKER_26_CONTAINERD_INFO = {"DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}
PODMAN_VERSION = {"Version": "4.3.1", "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
DOCKER_VERSION = {"Version": "26.1.5", "Components": [{"Name": "Engine"}, {"Name": "containerd"}]}


def test_the_image_store_comes_from_the_driver_status() -> None:
    assert image_store(DOCKER_20_INFO) == CLASSIC_STORE
    assert image_store(DOCKER_26_CONTAINERD_INFO) == CONTAINERD_STORE
    assert image_store({"DriverStatus": None}) == CLASSIC_STORE
    assert image_store({"DriverStatus": [["driver-type"], "junk"]}) == CLASSIC_STORE


def test_podman_is_told_by_its_component_names() -> None:
    assert engine_product(PODMAN_VERSION) == "Podman"
    assert engine_product(DOCKER_VERSION) == "Docker"
    assert engine_product({}) == "Docker"


class FakeClient:
    def __init__(self) -> None:
        self.store_info: dict[str, Any] = DOCKER_26_CONTAINERD_INFO

    def version(self) -> dict[str, Any]:
        return {**DOCKER_VERSION, "ApiVersion": "1.45"}

    def info(self) -> dict[str, Any]:
        return self.store_info


def test_the_profile_is_read_once_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine()
    client = FakeClient()
    engine._client = client  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="envd.gateways.engine"):
        info = engine.info()
        assert engine.image_store == CONTAINERD_STORE
        client.store_info = DOCKER_20_INFO  # what the daemon decided at start holds
        assert engine.image_store == CONTAINERD_STORE
    assert info.profile == "Docker 26.1.5 (API 1.45), containerd image store"
    said = [r.getMessage() for r in caplog.records if "engine:" in r.getMessage()]
    assert len(said) == 1 and "containerd image store" in said[0]


class FakeReply:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def raise_for_status(self) -> None:
        return None

    def json(self) -> dict[str, Any]:
        return self.body


class FakeLibpodApi:
    """Podman's API: its own info (`/libpod/info`) says whether it runs rootless."""

    base_url = "http+docker://localhost"
    api_version = "1.41"

    def __init__(self, rootless: bool) -> None:
        self.rootless = rootless
        self.asked: list[str] = []

    def get(self, url: str, timeout: int) -> FakeReply:
        self.asked.append(url)
        return FakeReply({"host": {"security": {"rootless": self.rootless}}})


def podman_engine(rootless: bool) -> tuple[Engine, FakeLibpodApi]:
    engine = Engine()
    client = FakeClient()
    client.store_info = {"SecurityOptions": ["name=seccomp,profile=default"]}
    client.version = lambda: {**PODMAN_VERSION, "ApiVersion": "1.41"}  # type: ignore[method-assign]
    client.api = FakeLibpodApi(rootless)  # type: ignore[attr-defined]
    engine._client = client  # type: ignore[assignment]
    return engine, client.api  # type: ignore[attr-defined]


def test_podman_is_said_rootless_or_rootful_from_its_own_info() -> None:
    rootless, api = podman_engine(rootless=True)
    assert rootless.info().profile == "Podman 4.3.1 (API 1.41), classic image store, rootless"
    assert rootless.rootless and api.asked == ["http+docker://localhost/v1.41/libpod/info"]
    rootful, _ = podman_engine(rootless=False)
    assert rootful.info().profile == "Podman 4.3.1 (API 1.41), classic image store, rootful"
    assert not rootful.rootless


def test_docker_says_rootless_only_when_it_is() -> None:
    assert engine_rootless({"SecurityOptions": ["name=seccomp,profile=builtin", "name=rootless"]})
    assert not engine_rootless({"SecurityOptions": ["name=seccomp,profile=builtin"]})
    assert not engine_rootless({}, {"host": "junk"})
    engine = Engine()
    engine._client = FakeClient()  # type: ignore[assignment]
    assert engine.info().profile == "Docker 26.1.5 (API 1.45), containerd image store"


class FakeContainersApi(FakeLibpodApi):
    """What a warm container's start asks the engine, recorded."""

    def __init__(self, rootless: bool) -> None:
        super().__init__(rootless)
        self.host_configs: list[dict[str, Any]] = []

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return {"Init": kwargs.get("init")}

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        self.host_configs.append(kwargs["host_config"])
        return {"Id": "c1"}

    def start(self, container: str) -> None:
        return None

    def inspect_container(self, ref: str) -> dict[str, Any]:
        return {"Id": ref, "Name": "/w", "State": {"Status": "running"}}


def warm_start_on(engine: Engine, api: FakeContainersApi) -> dict[str, Any]:
    engine.client.api = api
    engine.start_container_as("1000:1000", "w", "img", ["sleep", "infinity"])
    engine.start_container("w", "img", ["sleep", "infinity"])
    assert len(api.host_configs) == 2 and api.host_configs[0] == api.host_configs[1]
    return api.host_configs[0]


def test_warm_containers_on_rootless_podman_keep_the_callers_uid() -> None:
    # Rootless Podman maps the user to the container's root: without keep-id the caller's uid
    # inside could not reach the agent's folder nor write the project it mounts.
    rootless, _ = podman_engine(rootless=True)
    assert warm_start_on(rootless, FakeContainersApi(rootless=True))["UsernsMode"] == "keep-id"
    rootful, _ = podman_engine(rootless=False)
    assert "UsernsMode" not in warm_start_on(rootful, FakeContainersApi(rootless=False))
    docker = engine_with(DOCKER_20_INFO)
    assert "UsernsMode" not in warm_start_on(docker, FakeContainersApi(rootless=False))


# ------------------------------------------------------------------ containerd-store saves


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def containerd_save(layers: list[bytes], blobs: list[bytes] | None = None) -> bytes:
    """A `docker save` of the containerd store: gzip layer blobs, an OCI index, manifest.json."""
    blobs = blobs if blobs is not None else [gzip.compress(layer, mtime=0) for layer in layers]
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(x)}" for x in layers]}}
    ).encode()
    members = {f"blobs/sha256/{sha(b)}": b for b in blobs}
    members[f"blobs/sha256/{sha(config)}"] = config
    members["index.json"] = b'{"schemaVersion": 2, "manifests": []}'
    members["manifest.json"] = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{sha(config)}",
                "RepoTags": ["x:1"],
                "Layers": [f"blobs/sha256/{sha(b)}" for b in blobs],
            }
        ]
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_gzip_layers_are_written_uncompressed_and_named_by_diff_id(tmp_path: Path) -> None:
    layers = [layer_tar({"a": b"one"}), layer_tar({"b": b"two"})]
    raw, out = tmp_path / "raw.tar", tmp_path / "image.tar"
    raw.write_bytes(containerd_save(layers))
    assert uncompress_saved_image(raw, out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "index.json" not in names
    assert manifest[0]["Layers"] == [f"blobs/sha256/{sha(x)}" for x in layers]
    with open(out, "rb") as f:
        saved = read_saved_image(f, summarise_layer)
    assert saved.diff_ids == tuple(f"sha256:{sha(x)}" for x in layers)
    assert saved.sizes == tuple(len(x) for x in layers)  # stored uncompressed


def test_a_layer_that_is_not_its_diff_id_is_refused(tmp_path: Path) -> None:
    layers = [layer_tar({"a": b"one"})]
    other = gzip.compress(layer_tar({"a": b"evil"}), mtime=0)
    raw, out = tmp_path / "raw.tar", tmp_path / "image.tar"
    raw.write_bytes(containerd_save(layers, blobs=[other]))
    with pytest.raises(VerificationError, match="but its config says"):
        uncompress_saved_image(raw, out)


def test_an_uncompressed_save_is_kept_as_it_is(tmp_path: Path) -> None:
    layers = [layer_tar({"a": b"one"})]
    data = containerd_save(layers, blobs=layers)
    raw, out = tmp_path / "raw.tar", tmp_path / "image.tar"
    raw.write_bytes(data)
    assert not uncompress_saved_image(raw, out)
    assert out.read_bytes() == data and not raw.exists()


class FakeApi:
    def push(self, repository: str, **kwargs: Any) -> list[dict[str, Any]]:
        # What Docker 26's containerd store streams: a status line, no aux digest.
        return [{"status": "Pushed", "id": "f963a4bce1ae"}, {"status": "1: digest: sha256:x"}]

    def inspect_distribution(self, reference: str) -> dict[str, Any]:
        return {"Descriptor": {"digest": "sha256:" + "e" * 64}}


def engine_with(info: dict[str, Any]) -> Engine:
    engine = Engine()
    client = FakeClient()
    client.store_info = info
    client.api = FakeApi()  # type: ignore[attr-defined]
    engine._client = client  # type: ignore[assignment]
    return engine


def test_a_push_without_a_digest_asks_the_registry_on_the_containerd_store() -> None:
    result = engine_with(DOCKER_26_CONTAINERD_INFO).push("127.0.0.1:5000/team/x:1")
    assert result.digest == "sha256:" + "e" * 64 and result.pushed == 1
    with pytest.raises(RegistryError, match="did not return a digest"):
        engine_with(DOCKER_20_INFO).push("127.0.0.1:5000/team/x:1")


def test_a_loaded_image_is_named_by_the_engine_on_the_containerd_store() -> None:
    config, manifest = "sha256:" + "c" * 64, "sha256:" + "m" * 64
    assert engine_with(DOCKER_20_INFO).loaded_image(config, [manifest]) == config
    assert engine_with(DOCKER_26_CONTAINERD_INFO).loaded_image(config, [manifest]) == manifest
    with pytest.raises(RegistryError, match="did not say which image"):
        engine_with(DOCKER_26_CONTAINERD_INFO).loaded_image(config, ["x:1"])


# ------------------------------------------------------------------ Podman


def podman_save(layers: list[bytes]) -> bytes:
    """A `docker save` from Podman 4.3 (containers/image's docker-archive): each layer is
    `<diff-id>.tar` at the top, the legacy `<id>/layer.tar` a symlink to it."""
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(x)}" for x in layers]}}
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for layer in layers:
            add(f"{sha(layer)}.tar", layer)
        add(f"{sha(config)}.json", config)
        for i, layer in enumerate(layers):
            link = tarfile.TarInfo(f"{i:064x}/layer.tar")
            link.type, link.linkname = tarfile.SYMTYPE, f"../{sha(layer)}.tar"
            tar.addfile(link)
        entry = {"Config": f"{sha(config)}.json", "RepoTags": ["docker.io/x:1"],
                 "Layers": [f"{sha(x)}.tar" for x in layers]}  # fmt: skip
        add("manifest.json", json.dumps([entry]).encode())
    return buf.getvalue()


def test_a_podman_save_is_read_layer_by_layer_and_checked() -> None:
    layers = [layer_tar({"a": b"one"}), layer_tar({"b": b"two"})]
    saved = read_saved_image(io.BytesIO(podman_save(layers)), summarise_layer)
    assert saved.diff_ids == tuple(f"sha256:{sha(x)}" for x in layers)
    assert [sorted(s.entries) for s in saved.layers if s is not None] == [["/a"], ["/b"]]
    forged = podman_save(layers).replace(b"two", b"owt")
    with pytest.raises(VerificationError):
        read_saved_image(io.BytesIO(forged), summarise_layer)


class FakeImportApi:
    """Podman 4.3's import: the image goes in as `repository:latest`, the tag is ignored."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}

    def import_image_from_file(self, path: str, repository: str, tag: str, changes: Any) -> str:
        image = {"Id": "sha256:" + "a" * 64, "RepoTags": [f"docker.io/{repository}:latest"]}
        self.images[f"{repository}:latest"] = self.images[image["Id"]] = image
        return json.dumps({"status": image["Id"], "id": image["Id"]})

    def tag(self, image: str, repository: str, tag: str) -> bool:
        self.images[f"{repository}:{tag}"] = self.images[image]
        return True

    def inspect_image(self, ref: str) -> dict[str, Any]:
        import docker.errors

        if ref not in self.images:
            raise docker.errors.ImageNotFound(ref)
        return self.images[ref]


def test_an_import_that_ignores_the_tag_is_tagged_by_the_id_it_reports(tmp_path: Path) -> None:
    engine = engine_with(DOCKER_20_INFO)
    engine.client.api = FakeImportApi()
    image_id = engine.import_tarball(tmp_path / "base.tar", "envd/base-debian", "a066ec1a9665")
    assert image_id == "sha256:" + "a" * 64
    assert engine.image_exists("envd/base-debian:a066ec1a9665")


def test_a_podman_save_is_rewritten_in_the_layout_archives_take(tmp_path: Path) -> None:
    layers = [layer_tar({"a": b"one"}), layer_tar({"b": b"two"})]
    raw, out = tmp_path / "raw.tar", tmp_path / "image.tar"
    raw.write_bytes(podman_save(layers))
    assert uncompress_saved_image(raw, out)
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert not any(n.endswith(".tar") for n in tar.getnames())
    assert manifest[0]["Layers"] == [f"blobs/sha256/{sha(x)}" for x in layers]


class FakePodmanPushApi(FakeApi):
    def push(self, repository: str, **kwargs: Any) -> list[dict[str, Any]]:
        # What Podman 4.3 streams: no aux digest, the digest only in its last status line.
        digest = "sha256:" + "d" * 64
        return [{"status": "The push refers to repository [x]"},
                {"status": f"digest: {digest} size: 901", "id": "1"}]  # fmt: skip


def test_a_podman_push_takes_the_digest_from_its_status_line() -> None:
    engine = engine_with(DOCKER_20_INFO)
    engine.client.version = lambda: {**PODMAN_VERSION, "ApiVersion": "1.41"}  # type: ignore[method-assign]
    engine.client.api = FakePodmanPushApi()
    assert engine.push("127.0.0.1:5000/team/x:1").digest == "sha256:" + "d" * 64
    docker = engine_with(DOCKER_20_INFO)
    docker.client.api = FakePodmanPushApi()
    with pytest.raises(RegistryError, match="did not return a digest"):
        docker.push("127.0.0.1:5000/team/x:1")  # Docker's own stream always has the aux digest
