"""Which engine envd talks to, and whose GPUs it reports: fakes only, no engine contacted."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.errors import EXIT_ENGINE, EngineUnavailable, EnvdError
from envd.gateways.engine import (
    Engine,
    EngineEndpoint,
    EngineInfo,
    ImageInfo,
    Mount,
    RunResult,
    engine_is_remote,
    resolve_endpoint,
)
from envd.gateways.nvml import (
    DEBIAN_BASE_LABEL,
    GPU_PROBE_IMAGE,
    GPU_PROBE_SCRIPT,
    GpuReport,
    report_from_nvidia_smi,
)
from envd.model.host import GpuDevice
from envd.services.host import REMOTE_CPU_MODEL, HostProbe

H100 = GpuDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1234", 85_520_809_984, "9.0")


@pytest.mark.parametrize(
    ("host", "remote"),
    [
        ("unix:///var/run/docker.sock", False),
        ("http+unix:///var/run/docker.sock", False),
        ("tcp://127.0.0.1:2375", True),
        ("tcp://gpu1.example:2376", True),
        ("ssh://me@gpu1", True),
    ],
)
def test_only_a_local_socket_shares_our_files(host: str, remote: bool) -> None:
    assert engine_is_remote(host) is remote
    assert EngineEndpoint(host=host).remote is remote


def _context(config: Path, name: str, host: str) -> None:
    meta = config / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
            }
        )
    )


def test_docker_host_wins_over_contexts(tmp_path: Path) -> None:
    _context(tmp_path, "gpu1", "ssh://me@gpu1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gpu1"}))
    where = resolve_endpoint(
        {"DOCKER_HOST": "tcp://10.0.0.5:2375", "DOCKER_CONFIG": str(tmp_path), "HOME": "/x"}
    )
    assert (where.host, where.context, where.remote, where.error) == (
        "tcp://10.0.0.5:2375",
        "",
        True,
        "",
    )
    assert where.source == "DOCKER_HOST"


def test_docker_host_with_tls(tmp_path: Path) -> None:
    missing = resolve_endpoint(
        {"DOCKER_HOST": "tcp://gpu1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/no"}
    )
    assert "cannot use TLS for DOCKER_HOST=tcp://gpu1:2376" in missing.error
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("")
    where = resolve_endpoint(
        {
            "DOCKER_HOST": "tcp://gpu1:2376",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(tmp_path),
        }
    )
    assert where.tls is not None
    assert where.tls.ca_cert == str(tmp_path / "ca.pem")
    assert where.tls.verify


def test_current_context_from_the_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _context(tmp_path, "gpu1", "ssh://me@gpu1")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "gpu1"}))
    where = resolve_endpoint({})
    assert (where.host, where.context, where.remote) == ("ssh://me@gpu1", "gpu1", True)
    assert where.source == "context gpu1"
    _context(tmp_path, "other", "tcp://other:2375")
    named = resolve_endpoint({"DOCKER_CONTEXT": "other"})  # DOCKER_CONTEXT beats config.json
    assert (named.host, named.context) == ("tcp://other:2375", "other")


def test_default_context_is_the_local_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    where = resolve_endpoint({})
    assert (where.host, where.context, where.remote) == (
        "unix:///var/run/docker.sock",
        "default",
        False,
    )


def test_an_unknown_context_is_a_clear_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONTEXT", "nowhere")
    engine = Engine()
    assert "'nowhere'" in engine.endpoint.error and "DOCKER_CONTEXT" in engine.endpoint.error
    with pytest.raises(EngineUnavailable) as caught:
        _ = engine.client
    assert caught.value.exit_code == EXIT_ENGINE
    assert "docker context ls" in caught.value.hint
    info = engine.info()
    assert not info.reachable and "is not known" in info.error
    assert info.context == "nowhere"


# ---------------------------------------------------------------- whose GPUs


@dataclass
class CountingNvml:
    """This machine's NVML, seeing one H100; counts reads."""

    reads: int = 0

    def read(self) -> GpuReport:
        self.reads += 1
        return GpuReport((H100,), "550.54.15", "12.4", "", "NVML on this machine")


@dataclass
class FakeRemoteEngine:
    """An engine on another machine: its runtimes, and what nvidia-smi prints there."""

    host: str = "tcp://gpu1:2376"
    runtimes: tuple[str, ...] = ("runc",)
    smi_output: str = ""
    remote: bool = True
    runs: list[dict[str, Any]] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> EngineEndpoint:
        return EngineEndpoint(host=self.host)

    def info(self) -> EngineInfo:
        return EngineInfo(
            reachable=True,
            runtimes=self.runtimes,
            host=self.host,
            remote=self.remote,
            arch="aarch64",
            kernel="6.8.0-gh200",
            os="Ubuntu 24.04 LTS",
            cpu_count=72,
            memory_bytes=480 << 30,
        )

    bases: list[ImageInfo] = field(default_factory=list)

    def image_exists(self, ref: str) -> bool:
        return ref in self.pulled

    def list_images(self, label: str = "") -> list[ImageInfo]:
        return self.bases if label == DEBIAN_BASE_LABEL else []

    def pull(self, ref: str) -> ImageInfo:
        self.pulled.append(ref)
        return ImageInfo(
            id=f"sha256:{len(self.pulled)}",
            tags=(ref,),
            labels={},
            size=0,
            repo_digests=(),
            layers=(),
        )

    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        device_requests: Sequence[Mapping[str, Any]] = (),
        **kwargs: Any,
    ) -> RunResult:
        self.runs.append({"image": image, "argv": list(argv), "devices": list(device_requests)})
        return RunResult(exit_code=0, output=self.smi_output)


def test_remote_engine_without_gpu_runtime_has_no_gpus_though_this_machine_has() -> None:
    nvml, engine = CountingNvml(), FakeRemoteEngine()
    host = HostProbe(lambda: nvml, engine).host  # type: ignore[arg-type]
    assert host.gpus == ()
    assert host.gpu_source == "the engine at tcp://gpu1:2376"
    assert host.gpu_error == (
        "no NVIDIA GPU: no GPU runtime on the engine at tcp://gpu1:2376 "
        "(neither the nvidia runtime nor CDI)"
    )
    assert nvml.reads == 0  # the local NVML is never read for a remote engine
    # The host is the engine's machine, as the engine reports it, not this one.
    assert (host.arch, host.kernel, host.os, host.cpu_count, host.memory_bytes) == (
        "aarch64",
        "6.8.0-gh200",
        "Ubuntu 24.04 LTS",
        72,
        480 << 30,
    )
    assert host.cpu_model == REMOTE_CPU_MODEL
    assert engine.runs == []  # nothing to probe without a runtime


def test_local_engine_reads_nvml_here() -> None:
    nvml, engine = CountingNvml(), FakeRemoteEngine(host="unix:///var/run/docker.sock")
    engine.remote = False
    host = HostProbe(lambda: nvml, engine).host  # type: ignore[arg-type]
    assert host.gpus == (H100,) and host.gpu_source == "NVML on this machine"
    assert nvml.reads == 1


SMI = (
    "0, NVIDIA H200, GPU-aaaa, 143771, 9.0, 570.86.15\n"
    "1, NVIDIA H200, GPU-bbbb, 143771, 9.0, 570.86.15\n"
    "CUDA Version: 12.8\n"
)


def test_remote_engine_with_nvidia_runtime_reports_its_gpus() -> None:
    engine = FakeRemoteEngine(runtimes=("nvidia", "runc"), smi_output=SMI)
    host = HostProbe(CountingNvml, engine).host  # type: ignore[arg-type]
    assert [(g.index, g.name, g.uuid) for g in host.gpus] == [
        (0, "NVIDIA H200", "GPU-aaaa"),
        (1, "NVIDIA H200", "GPU-bbbb"),
    ]
    assert host.gpus[0].memory_bytes == 143771 << 20
    assert host.gpus[0].compute_capability == "9.0"
    assert (host.driver_version, host.cuda_driver_version) == ("570.86.15", "12.8")
    assert host.gpu_error == "" and host.gpu_source == "the engine at tcp://gpu1:2376"
    (run,) = engine.runs
    assert run["argv"] == ["sh", "-c", GPU_PROBE_SCRIPT]
    assert run["devices"] == [
        {"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu", "utility"]]}
    ]
    assert engine.pulled == [GPU_PROBE_IMAGE]  # no image to run it in: pulled first
    assert run["image"] == "sha256:1"


def test_the_gpu_probe_runs_in_an_imported_debian_base_when_there_is_one() -> None:
    base = ImageInfo("sha256:base", ("envd/base-debian:x",), {}, 0, (), ())
    engine = FakeRemoteEngine(runtimes=("nvidia", "runc"), smi_output=SMI, bases=[base])
    host = HostProbe(CountingNvml, engine).host  # type: ignore[arg-type]
    assert len(host.gpus) == 2
    assert engine.pulled == [] and engine.runs[0]["image"] == "sha256:base"


def test_a_failing_gpu_probe_is_reported_not_raised() -> None:
    engine = FakeRemoteEngine(runtimes=("nvidia",), smi_output="")

    def broken(*args: Any, **kwargs: Any) -> RunResult:
        return RunResult(
            exit_code=3,
            output="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver",
        )

    engine.run = broken  # type: ignore[method-assign]
    host = HostProbe(CountingNvml, engine).host  # type: ignore[arg-type]
    assert host.gpus == ()
    assert host.gpu_error.startswith("no NVIDIA GPU: nvidia-smi on the engine at tcp://gpu1:2376")
    assert "couldn't communicate" in host.gpu_error


def test_nvidia_smi_listing_none_says_so() -> None:
    report = report_from_nvidia_smi("No devices were found\n", "the engine at tcp://x:1")
    assert report.gpus == ()
    assert report.error.startswith("no NVIDIA GPU: nvidia-smi on the engine at tcp://x:1")
    assert "No devices were found" in report.error


# ---------------------------------------------------------------- host folders on a remote engine


class FakeApi:
    """The docker API calls Engine.run makes, recorded; containers exit 0 at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.archives: dict[str, dict[str, bytes]] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        self.host_configs: list[dict[str, Any]] = []

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        self.host_configs.append(kwargs)
        return kwargs

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self.volumes[name] = labels
        self.calls.append(("create_volume", name))

    def remove_volume(self, name: str, force: bool = False) -> None:
        del self.volumes[name]
        self.calls.append(("remove_volume", name))

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        cid = f"c{len(self.calls)}"
        self.calls.append(("create_container", (cid, image, kwargs.get("command"))))
        return {"Id": cid}

    def put_archive(self, container: str, path: str, data: Any) -> bool:
        with tarfile.open(fileobj=data) as tar:
            self.archives[container] = {
                m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tar.getmembers()
            }
            owners = {(m.uid, m.gid) for m in tar.getmembers()}
        assert owners == {(0, 0)}
        self.calls.append(("put_archive", (container, path)))
        return True

    def start(self, container: str) -> None:
        self.calls.append(("start", container))

    def logs(self, container: str, **kwargs: Any) -> list[bytes]:
        return [b"done\n"]

    def wait(self, container: str, timeout: Any = None) -> dict[str, int]:
        return {"StatusCode": 0}

    def remove_container(self, container: str, **kwargs: Any) -> None:
        self.calls.append(("remove_container", container))


def _engine_at(host: str) -> tuple[Engine, FakeApi]:
    engine = Engine(extra_labels={"envd.test": "unit"})
    api = FakeApi()
    engine._endpoint = EngineEndpoint(host=host)
    engine._client = type("Client", (), {"api": api})()  # type: ignore[assignment]
    return engine, api


def test_a_folder_mount_on_a_remote_engine_is_a_copy_removed_after_the_run(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mnt"
    (folder / "workspace").mkdir(parents=True)
    (folder / "ca.pem").write_text("CERT")
    (folder / "workspace" / "setup.sh").write_text("echo hi")
    engine, api = _engine_at("tcp://gpu1:2375")
    result = engine.run(
        "sha256:parent",
        ["true"],
        mounts=[Mount(str(folder), "/mnt", read_only=True), Mount("cache", "/c", volume=True)],
        labels={"envd.owner": "me"},
    )
    assert result.exit_code == 0
    names = [c[0] for c in api.calls]
    assert names == [
        "create_volume",
        "create_container",  # the filler: created from the step's image, never started
        "put_archive",
        "remove_container",
        "create_container",
        "start",
        "remove_container",
        "remove_volume",  # after the container it served
    ]
    volume = api.calls[0][1]
    filler = api.calls[1][1][0]
    assert api.calls[1][1][1] == "sha256:parent"
    assert ("start", filler) not in api.calls
    assert api.archives[filler]["ca.pem"] == b"CERT"
    assert api.archives[filler]["workspace/setup.sh"] == b"echo hi"
    mounts = api.host_configs[-1]["mounts"]
    assert [(m["Source"], m["Target"], m["Type"], m["ReadOnly"]) for m in mounts] == [
        (volume, "/mnt", "volume", True),
        ("cache", "/c", "volume", False),
    ]
    assert api.volumes == {}


def test_a_local_engine_binds_the_folder_itself(tmp_path: Path) -> None:
    engine, api = _engine_at("unix:///var/run/docker.sock")
    engine.run("img", ["true"], mounts=[Mount(str(tmp_path), "/mnt", read_only=True)])
    assert "create_volume" not in [c[0] for c in api.calls]
    (mount,) = api.host_configs[-1]["mounts"]
    assert (mount["Source"], mount["Type"]) == (str(tmp_path), "bind")


def test_a_writable_folder_is_refused_on_a_remote_engine(tmp_path: Path) -> None:
    engine, api = _engine_at("ssh://me@gpu1")
    with pytest.raises(EnvdError, match="cannot be mounted writable on the remote engine"):
        engine.run("img", ["true"], mounts=[Mount(str(tmp_path), "/work")])
    assert api.calls == []


@pytest.mark.parametrize(("host", "ssh"), [("ssh://me@gpu1", True), ("tcp://gpu1:2375", False)])
def test_ssh_hosts_go_through_the_users_ssh_client(
    host: str, ssh: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker

    made: list[dict[str, Any]] = []

    class Client:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

        def ping(self) -> bool:
            return True

    monkeypatch.setattr(docker, "DockerClient", Client)
    engine = Engine()
    engine._endpoint = EngineEndpoint(host=host)
    _ = engine.client
    assert made[0]["base_url"] == host
    assert made[0]["use_ssh_client"] is ssh  # so ~/.ssh/config, agents and jump hosts work
