"""Host detection: /proc and os-release readers, detect_host on a fake root and on this machine."""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

import pytest

from envd.gateways.machine import detect_host
from envd.gateways.nvml import NvmlGateway
from envd.model.host import HostInfo, cpu_model, memory_bytes, os_name
from tests.fakes.nvml import A100, H100, FakeNvml

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu vme

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
"""

GRACE_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd4f
CPU revision\t: 0
"""

MEMINFO = """\
MemTotal:       263921288 kB
MemFree:        12345678 kB
MemAvailable:   200000000 kB
"""

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
"""


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize(
    ("text", "model"),
    [
        (X86_CPUINFO, "AMD EPYC 9654 96-Core Processor"),
        (GRACE_CPUINFO, "ARM Neoverse-V2"),
        (GRACE_CPUINFO.replace("0xd4f", "0xfff"), "Arm implementer 0x41 part 0xfff"),
        ("processor\t: 0\nHardware\t: BCM2835\n", "BCM2835"),
        ("", "unknown"),
    ],
)
def test_cpu_model(text: str, model: str) -> None:
    assert cpu_model(text) == model


def test_memory_bytes() -> None:
    assert memory_bytes(MEMINFO) == 263_921_288 * 1024
    assert memory_bytes("MemFree: 1 kB\n") == 0
    assert memory_bytes("") == 0


@pytest.mark.parametrize(
    ("text", "name"),
    [
        (OS_RELEASE, "Debian GNU/Linux 12 (bookworm)"),
        ("PRETTY_NAME='Ubuntu 24.04.1 LTS'\n", "Ubuntu 24.04.1 LTS"),
        ("# comment\nPRETTY_NAME=Alpine\\ Linux\n", "Alpine Linux"),
        (
            'NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\n',
            "Fedora Linux 40 (Server Edition)",
        ),
        ('PRETTY_NAME="unbalanced\n', "unbalanced"),
        ("", "Linux"),
    ],
)
def test_os_name(text: str, name: str) -> None:
    assert os_name(text) == name


# ---------------------------------------------------------------- detect_host on a fake root


def make_root(tmp_path: Path, *, os_release_at: str = "etc/os-release") -> Path:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(X86_CPUINFO)
    (tmp_path / "proc/meminfo").write_text(MEMINFO)
    release = tmp_path / os_release_at
    release.parent.mkdir(parents=True, exist_ok=True)
    release.write_text(OS_RELEASE)
    return tmp_path


def test_detect_gpu_host_from_files(tmp_path: Path) -> None:
    nvml = FakeNvml.gpu_host(H100, A100, driver="570.124.06", cuda="12.8")
    host = detect_host(nvml, root=make_root(tmp_path))
    assert host.cpu_model == "AMD EPYC 9654 96-Core Processor"
    assert host.memory_bytes == 263_921_288 * 1024
    assert host.os == "Debian GNU/Linux 12 (bookworm)"
    assert host.arch == os.uname().machine and host.kernel == os.uname().release
    assert host.cpu_count == os.cpu_count()
    assert [g.name for g in host.gpus] == ["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"]
    assert [g.compute_capability for g in host.gpus] == ["9.0", "8.0"]
    assert (host.driver_version, host.cuda_driver_version, host.gpu_error) == (
        "570.124.06",
        "12.8",
        "",
    )
    assert nvml.reads == 1


def test_detect_cpu_host_from_files(tmp_path: Path) -> None:
    host = detect_host(
        FakeNvml.cpu_host("the NVIDIA kernel driver is not loaded"), make_root(tmp_path)
    )
    assert host.gpus == () and host.driver_version == "" and host.cuda_driver_version == ""
    assert host.gpu_error == "no NVIDIA GPU: the NVIDIA kernel driver is not loaded"


def test_os_release_falls_back_to_usr_lib(tmp_path: Path) -> None:
    host = detect_host(FakeNvml(), make_root(tmp_path, os_release_at="usr/lib/os-release"))
    assert host.os == "Debian GNU/Linux 12 (bookworm)"


def test_missing_files_are_not_an_error(tmp_path: Path) -> None:
    host = detect_host(FakeNvml.cpu_host(), root=tmp_path)
    assert (host.cpu_model, host.memory_bytes, host.os) == ("unknown", 0, "Linux")


def test_host_info_is_frozen(tmp_path: Path) -> None:
    host = detect_host(FakeNvml(), root=tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.kernel = "other"  # type: ignore[misc]


# ---------------------------------------------------------------- this machine, real NVML


def test_detect_this_machine() -> None:
    host = detect_host(NvmlGateway())
    assert isinstance(host, HostInfo)
    assert host.cpu_count > 0 and host.memory_bytes > 0
    assert host.kernel == platform.release() and host.arch == platform.machine()
    assert host.cpu_model and host.os
    if not host.gpus:  # no NVIDIA driver here: a CPU host, with the reason kept
        assert host.gpu_error.startswith("no NVIDIA GPU: ")
        assert host.driver_version == "" and host.cuda_driver_version == ""
