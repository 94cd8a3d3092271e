"""CUDA versions, NVIDIA drivers, torch builds and the host checks made before a build (pure)."""

from __future__ import annotations

import re

from envd.errors import HostRequirementError, LockError, UsageError
from envd.model.host import HostInfo

# Minimum Linux x86_64 driver for each CUDA toolkit release, GA rows of "Table 3: CUDA Toolkit
# and Corresponding Driver Versions" in NVIDIA's CUDA Toolkit release notes (13.2 Update 2).
MIN_DRIVER: dict[str, str] = {
    "11.0": "450.51.05",  # 11.0.2 GA
    "11.1": "455.23",
    "11.2": "460.27.03",
    "11.3": "465.19.01",
    "11.4": "470.42.01",
    "11.5": "495.29.05",
    "11.6": "510.39.01",
    "11.7": "515.43.04",
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
    "13.1": "590.44.01",
    "13.2": "595.45.04",
}

# The CUDA that torch's default PyPI wheels for Linux x86_64 are built for, by torch minor.
# 2.0: cog's pkg/config/torch_compatibility_matrix.json (the entry without an index URL);
# 2.1-2.8: pytorch.org "Previous versions" (the plain `pip install torch` line of each release);
# 2.9-2.14: PyTorch's release announcements (googlecolab/colabtools #5661, #5801, #5925,
# #5982, #6053, #6093: "pip3 install torch ... should install ... Cuda 12.8/13.0").
# A torch release not listed here is never chosen: it may need a newer CUDA.
TORCH_PYPI_CUDA: dict[str, str] = {
    "2.0": "11.7",
    "2.1": "12.1",
    "2.2": "12.1",
    "2.3": "12.1",
    "2.4": "12.1",
    "2.5": "12.4",
    "2.6": "12.4",
    "2.7": "12.6",
    "2.8": "12.8",
    "2.9": "12.8",
    "2.10": "12.8",
    "2.11": "13.0",
    "2.12": "13.0",
    "2.13": "13.0",
    "2.14": "13.0",
}

_CUDA = re.compile(r"^(\d{1,2})\.(\d{1,2})(?:\.\d+)?$")
_DRIVER = re.compile(r"^\d+(?:\.\d+)*$")


# ------------------------------------------------------------------ versions


def parse_cuda_version(text: str) -> tuple[int, int]:
    """ "12.4" (or "12.4.1") -> (12, 4); ValueError for anything else."""
    match = _CUDA.match(text.strip())
    if match is None:
        raise ValueError(f"not a CUDA version: {text!r} (expected major.minor, e.g. 12.4)")
    return int(match.group(1)), int(match.group(2))


def parse_driver_version(text: str) -> tuple[int, ...]:
    """ "550.54.15" -> (550, 54, 15); ValueError for anything else."""
    if not _DRIVER.match(text.strip()):
        raise ValueError(f"not an NVIDIA driver version: {text!r}")
    return tuple(int(part) for part in text.strip().split("."))


def cuda_newer_than(wanted: str, available: str) -> bool:
    """Whether CUDA `wanted` is newer than CUDA `available` ("12.6" vs "12.4" -> True)."""
    return parse_cuda_version(wanted) > parse_cuda_version(available)


def driver_older_than(driver: str, minimum: str) -> bool:
    """Whether NVIDIA driver `driver` is older than `minimum` ("535.104.05" vs "550.54.14")."""
    return parse_driver_version(driver) < parse_driver_version(minimum)


def accelerator_variant(cuda: str | None) -> str:
    """ "cpu", or the wheel-variant name of a CUDA version: "12.4" -> "cu124"."""
    if not cuda:
        return "cpu"
    major, minor = parse_cuda_version(cuda)
    return f"cu{major}{minor}"


def min_driver_for_cuda(cuda: str) -> str:
    """The oldest Linux driver NVIDIA lists for CUDA `cuda`.

    A version between two releases takes the next release's driver. A later minor of a known
    major takes that major's newest listed driver (CUDA minor-version compatibility runs it);
    an unknown major is refused, since no driver can be promised for it.
    """
    wanted = parse_cuda_version(cuda)
    known = sorted(MIN_DRIVER, key=parse_cuda_version)
    for release in known:
        if parse_cuda_version(release) >= wanted:
            return MIN_DRIVER[release]
    same_major = [r for r in known if parse_cuda_version(r)[0] == wanted[0]]
    if same_major:
        return MIN_DRIVER[same_major[-1]]
    raise LockError(
        f"envd does not know the minimum NVIDIA driver for CUDA {cuda} "
        f"(it knows CUDA {known[0]} to {known[-1]})",
        hint=f'set `cuda:` to a release envd knows, e.g. "{known[-1]}", or upgrade envd',
    )


def torch_pypi_cuda_constraint(cuda: str) -> str | None:
    """A requirement keeping torch to PyPI wheels built for CUDA `cuda` or older.

    "12.4" -> "torch<2.7". None when no torch release on PyPI is built for so old a CUDA.
    """
    wanted = parse_cuda_version(cuda)
    fitting = [t for t, c in TORCH_PYPI_CUDA.items() if parse_cuda_version(c) <= wanted]
    if not fitting:
        return None
    major, minor = max(parse_cuda_version(t) for t in fitting)
    return f"torch<{major}.{minor + 1}"


# ------------------------------------------------------------------ host checks


def check_host(spec_gpu: str, spec_cuda: str | None, host: HostInfo, nvidia_runtime: bool) -> None:
    """Refuse, before anything is built, what this host cannot run.

    `gpu: required` needs a GPU and the engine's nvidia runtime. `cuda:` must not be newer than
    the driver supports; on a host without GPUs (or with `gpu: none`) that is not checked, so a
    CPU machine can still lock and build CUDA images for a GPU machine.
    """
    if spec_gpu == "required":
        if not host.gpus:
            reason = host.gpu_error or "no NVIDIA GPU: NVML lists none"
            raise HostRequirementError(
                f"envd.yaml says `gpu: required`, but this host has {reason}",
                hint="install the NVIDIA driver (`nvidia-smi` should list the GPUs), "
                "or set `gpu: auto` to build and run on CPU",
            )
        if not nvidia_runtime:
            raise HostRequirementError(
                f"envd.yaml says `gpu: required` and this host has {len(host.gpus)} NVIDIA "
                "GPU(s), but the Docker engine has no `nvidia` runtime to attach them",
                hint="install nvidia-container-toolkit, run "
                "`sudo nvidia-ctk runtime configure --runtime=docker`, and restart the engine "
                "(`sudo systemctl restart docker`)",
            )
    if not spec_cuda or not host.gpus or spec_gpu == "none":
        return
    driver_cuda = host.cuda_driver_version
    try:
        too_new = cuda_newer_than(spec_cuda, driver_cuda)
    except ValueError:
        return  # NVML could not say which CUDA the driver supports; nothing to compare
    if too_new:
        driver = host.driver_version or "(unknown version)"
        try:
            needed = f"driver {min_driver_for_cuda(spec_cuda)} or newer"
        except LockError:  # a CUDA newer than envd's table: the host is still the problem
            needed = "a newer driver than envd knows of"
        raise HostRequirementError(
            f"envd.yaml asks for CUDA {spec_cuda}, but this host's NVIDIA driver {driver} "
            f"supports CUDA {driver_cuda} at most; CUDA {spec_cuda} needs {needed}",
            hint=f"upgrade the NVIDIA driver ({needed}), "
            f'or set `cuda: "{driver_cuda}"` in envd.yaml and run `envctl lock`',
        )


def host_gap(spec_gpu: str, host: HostInfo) -> str:
    """What `status` says when the environment needs a GPU this host lacks ("" when not)."""
    if spec_gpu != "required" or host.gpus:
        return ""
    reason = host.gpu_error or "no NVIDIA GPU: NVML lists none"
    return (
        f"envd.yaml says `gpu: required`, but this host has {reason}: lock, build and share "
        "work here; enter and runs need a host with an NVIDIA GPU"
    )


def check_driver_for_lock(min_driver: str, host: HostInfo) -> None:
    """Refuse a lock whose CUDA build needs a newer driver than this host has (no-op on CPU)."""
    if not min_driver or not host.gpus or not host.driver_version:
        return
    try:
        too_old = driver_older_than(host.driver_version, min_driver)
    except ValueError:
        return  # an unreadable version is not evidence of an old driver
    if too_old:
        raise HostRequirementError(
            f"envd.lock's CUDA build needs NVIDIA driver {min_driver} or newer, "
            f"but this host has driver {host.driver_version}",
            hint="upgrade the NVIDIA driver, or lower `cuda:` in envd.yaml and run `envctl lock`",
        )


def parse_gpu_selection(text: str, count: int) -> tuple[int, ...] | None:
    """`--gpus all` (or nothing) -> None, meaning all; `--gpus 0,1` -> (0, 1).

    Each index must name one of the host's `count` GPUs, once.
    """
    text = text.strip()
    if text.lower() in ("", "all"):
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise UsageError(
            f"--gpus takes `all` or GPU indexes like `0,1`, not {text!r}",
            hint="`envctl info` lists the GPUs and their indexes",
        )
    chosen = tuple(int(part) for part in parts)
    for i, index in enumerate(chosen):
        if index in chosen[:i]:
            raise UsageError(f"--gpus names GPU {index} twice", hint="name each GPU once")
        if index >= count:
            have = f"has {count} GPU(s), 0 to {count - 1}" if count else "has no NVIDIA GPU"
            raise UsageError(
                f"--gpus names GPU {index}, but this host {have}",
                hint="`envctl info` lists the GPUs and their indexes",
            )
    return chosen
