"""CUDA versions, drivers and torch builds (pure)."""

from __future__ import annotations

from envd.errors import HostRequirementError, UsageError

# Minimum Linux driver for each CUDA toolkit release (NVIDIA's CUDA release notes, table 3).
MIN_DRIVER = {
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
}

# The CUDA that torch's default PyPI Linux x86_64 wheels are built for, by torch minor release
# (pytorch.org "previous versions"; cog keeps the same table in pkg/config/torch_compatibility).
TORCH_PYPI_CUDA = {
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
}


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def accelerator_variant(cuda: str | None) -> str:
    """ "cpu", or the wheel-variant name for a CUDA version: "12.4" -> "cu124"."""
    if not cuda:
        return "cpu"
    major, minor = parse_version(cuda)[:2]
    return f"cu{major}{minor}"


def min_driver_for_cuda(cuda: str) -> str:
    """The oldest Linux driver that runs CUDA `cuda` (the next known release at or above it)."""
    wanted = parse_version(cuda)
    for known in sorted(MIN_DRIVER, key=parse_version):
        if parse_version(known) >= wanted:
            return MIN_DRIVER[known]
    return MIN_DRIVER[max(MIN_DRIVER, key=parse_version)]


def torch_pypi_cuda_constraint(cuda: str) -> str | None:
    """A torch version range whose PyPI wheels need at most CUDA `cuda`; None when none does."""
    wanted = parse_version(cuda)
    fitting = [t for t, c in TORCH_PYPI_CUDA.items() if parse_version(c) <= wanted]
    if not fitting:
        return None
    newest = max(fitting, key=parse_version)
    major, minor = parse_version(newest)
    return f"torch<{major}.{minor + 1}"


def check_host(
    spec_gpu: str,
    spec_cuda: str | None,
    gpus: int,
    driver: str,
    driver_cuda: str,
    gpu_error: str,
    nvidia_runtime: bool,
) -> None:
    """Refuse, before any build, what the host cannot run."""
    if spec_gpu == "required":
        if gpus == 0:
            reason = f" ({gpu_error})" if gpu_error else ""
            raise HostRequirementError(
                f"envd.yaml says `gpu: required`, but this host has no NVIDIA GPU{reason}",
                hint="install the NVIDIA driver on a GPU host, or set `gpu: auto` to run on CPU",
            )
        if not nvidia_runtime:
            raise HostRequirementError(
                "envd.yaml says `gpu: required`, but the Docker engine has no nvidia runtime",
                hint="install nvidia-container-toolkit, run `nvidia-ctk runtime configure`, "
                "and restart the engine",
            )
    too_new = bool(spec_cuda and gpus > 0 and driver_cuda)
    if too_new and parse_version(spec_cuda or "0") > parse_version(driver_cuda):
        raise HostRequirementError(
            f"envd.yaml asks for CUDA {spec_cuda}, but driver {driver} supports at most "
            f"CUDA {driver_cuda}",
            hint=f"upgrade the driver to {min_driver_for_cuda(spec_cuda or '0')} or newer, or "
            f'set `cuda: "{driver_cuda}"`',
        )


def check_driver_for_lock(min_driver: str, driver: str, gpus: int) -> None:
    """A lock whose CUDA build needs a newer driver than the host has is refused at enter."""
    if not min_driver or gpus == 0 or not driver:
        return
    if parse_version(driver) < parse_version(min_driver):
        raise HostRequirementError(
            f"envd.lock's CUDA build needs NVIDIA driver {min_driver} or newer; "
            f"this host has {driver}",
            hint="upgrade the driver, or lower `cuda:` in envd.yaml and run `envctl lock`",
        )


def parse_gpu_selection(text: str, count: int) -> tuple[int, ...] | None:
    """`--gpus all` -> None (all); `--gpus 0,1` -> (0, 1), each checked against `count`."""
    if text in ("", "all"):
        return None
    try:
        chosen = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--gpus takes `all` or indexes like 0,1, not {text!r}") from None
    bad = [i for i in chosen if not 0 <= i < count]
    if bad:
        raise UsageError(
            f"--gpus names GPU {bad[0]}, but this host has {count} GPU(s)",
            hint="`envctl info` lists them",
        )
    return chosen
