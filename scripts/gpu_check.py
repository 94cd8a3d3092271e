"""Run envd's real NVML gateway and host model on this machine and record what they say.

No daemon, no Docker engine needed (Docker is tried once, at the end, if it is there). Writes
to --out DIR:

  gpu_check.json   raw NVML answers, envd's HostInfo, the host fingerprint section and hash,
                   the outcome of the GPU/CUDA/driver checks, the optional container run
  nvml-report.json the GPU report in exactly the format ENVD_NVML_REPORT replays (a fixture:
                   tests/fixtures/nvml-<gpu>.json)

It never crashes: each section catches its own errors and records them, and the exit code is 0
whenever the JSON was written. `scripts/gpu_check.sh` is the one command for a GPU machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/gpu_check.py` from anywhere
    sys.path.insert(0, str(REPO))

from envd.errors import EnvdError  # noqa: E402
from envd.gateways.machine import detect_host  # noqa: E402
from envd.gateways.nvml import GpuReport, NvmlGateway, NvmlModule, RecordedGpus  # noqa: E402
from envd.model import cuda as cudamod  # noqa: E402
from envd.model.fingerprint import HostGpu, HostSection, section_hash  # noqa: E402
from envd.model.host import HostInfo  # noqa: E402

REPORT_NAME = "gpu_check.json"
REPLAY_NAME = "nvml-report.json"
TEMPLATE = REPO / "environments" / "pytorch-cuda"
SCHEMA = 1

ModuleLoader = Callable[[], NvmlModule]


def _import_pynvml() -> NvmlModule:
    module: Any = importlib.import_module("pynvml")
    return module  # type: ignore[no-any-return]


# ---------------------------------------------------------------- small helpers


def _jsonable(value: object) -> object:
    """NVML answers as JSON: bytes decoded, ctypes structs as their fields, else repr."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    names = [n for n, *_ in getattr(value, "_fields_", ())]
    if not names:
        names = [n for n in ("total", "free", "used", "reserved") if hasattr(value, n)]
    if names:
        return {n: _jsonable(getattr(value, n)) for n in names}
    return repr(value)


def _error(exc: BaseException) -> dict[str, object]:
    out: dict[str, object] = {"type": type(exc).__name__, "message": str(exc)}
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        out["code"] = code
    return out


def _section(fn: Callable[[], object]) -> object:
    """Run one section; an exception becomes a record, never a crash."""
    try:
        return fn()
    except BaseException as exc:  # the whole point: record, don't crash
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return {"section_error": _error(exc), "traceback": traceback.format_exc()}


def _call(nvml: object, name: str, *args: object) -> dict[str, object]:
    """One NVML call: {"value": ...} or {"error": {...}}; a missing function is an error too."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return {"error": {"type": "AttributeError", "message": f"this pynvml has no {name}"}}
    try:
        return {"value": _jsonable(fn(*args))}
    except Exception as exc:
        return {"error": _error(exc)}


# ---------------------------------------------------------------- sections


def environment_section(loader: ModuleLoader) -> dict[str, object]:
    info: dict[str, object] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "envd_repo": str(REPO),
    }
    try:
        module = loader()
        info["pynvml_file"] = str(getattr(module, "__file__", "") or repr(module))
    except Exception as exc:
        info["pynvml_import_error"] = _error(exc)
    for name in ("yaml", "packaging"):  # what envd's spec loader will use
        try:
            info[f"{name}_file"] = str(importlib.import_module(name).__file__)
        except Exception as exc:
            info[f"{name}_import_error"] = _error(exc)
    try:
        from importlib.metadata import version

        info["nvidia_ml_py_version"] = version("nvidia-ml-py")
    except Exception as exc:
        info["nvidia_ml_py_version_error"] = _error(exc)
    return info


def raw_nvml(loader: ModuleLoader) -> dict[str, object]:
    """Every NVML answer the gateway uses, and a few it does not, each with its own error."""
    try:
        nvml: Any = loader()
    except Exception as exc:
        return {"import_error": _error(exc)}
    out: dict[str, object] = {"init": _call(nvml, "nvmlInit")}
    if "error" in out["init"]:  # type: ignore[operator]
        return out
    try:
        system = {
            name: _call(nvml, name)
            for name in (
                "nvmlSystemGetDriverVersion",
                "nvmlSystemGetNVMLVersion",
                "nvmlSystemGetCudaDriverVersion",
                "nvmlSystemGetCudaDriverVersion_v2",
            )
        }
        out["system"] = system
        count = _call(nvml, "nvmlDeviceGetCount")
        out["count"] = count
        devices: list[dict[str, object]] = []
        n = count.get("value")
        for index in range(n if isinstance(n, int) else 0):
            device: dict[str, object] = {"index": index}
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:
                device["handle_error"] = _error(exc)
                devices.append(device)
                continue
            for name in (
                "nvmlDeviceGetName",
                "nvmlDeviceGetUUID",
                "nvmlDeviceGetMemoryInfo",
                "nvmlDeviceGetCudaComputeCapability",
                "nvmlDeviceGetMigMode",
                "nvmlDeviceGetPciInfo",
            ):
                device[name] = _call(nvml, name, handle)
            devices.append(device)
        out["devices"] = devices
    finally:
        out["shutdown"] = _call(nvml, "nvmlShutdown")
    return out


def host_info(report: GpuReport) -> HostInfo:
    class _Once:
        def read(self) -> GpuReport:
            return report

    return detect_host(_Once())


def host_section(host: HostInfo, engine_version: str) -> HostSection:
    # As envd.services.fingerprints.host_section builds it (engine version from `docker info`).
    return HostSection(
        cpu_model=host.cpu_model,
        arch=host.arch,
        kernel=host.kernel,
        engine_version=engine_version,
        gpus=tuple(HostGpu(g.name, g.compute_capability, g.memory_bytes) for g in host.gpus),
        driver_version=host.driver_version,
        cuda_driver_version=host.cuda_driver_version,
    )


def replay_dict(report: GpuReport) -> dict[str, object]:
    """The file RecordedGpus (ENVD_NVML_REPORT) reads."""
    return {
        "gpus": [asdict(g) for g in report.gpus],
        "driver_version": report.driver_version,
        "cuda_driver_version": report.cuda_driver_version,
        "error": report.error,
        "source": report.source,
    }


def _outcome(fn: Callable[[], None]) -> dict[str, object]:
    try:
        fn()
    except EnvdError as exc:
        return {
            "outcome": "error",
            "class": type(exc).__name__,
            "message": exc.message,
            "hint": exc.hint,
            "exit_code": exc.exit_code,
        }
    except Exception as exc:  # not an EnvdError: a bug envd would report as exit 3
        return {"outcome": "error", "class": type(exc).__name__, "message": str(exc)}
    return {"outcome": "ok", "exit_code": 0}


def _neighbours(cuda: str) -> dict[str, str]:
    major, minor = cudamod.parse_cuda_version(cuda)
    if minor > 0:
        below = f"{major}.{minor - 1}"
    else:  # 13.0 -> the newest known 12.x
        older = [v for v in cudamod.MIN_DRIVER if cudamod.parse_cuda_version(v)[0] == major - 1]
        below = max(older, key=cudamod.parse_cuda_version) if older else f"{major - 1}.0"
    return {
        "at_driver": f"{major}.{minor}",
        "minor_above": f"{major}.{minor + 1}",
        "major_above": f"{major + 1}.0",
        "minor_below": below,
    }


def template_cuda() -> dict[str, object]:
    """The pytorch-cuda template's `cuda:`, read through envd's own spec loader."""
    from envd.gateways.projectfiles import load_spec  # needs pyyaml and packaging

    spec = load_spec(TEMPLATE)
    return {"template": str(TEMPLATE.relative_to(REPO)), "cuda": spec.cuda, "gpu": spec.gpu}


def checks(host: HostInfo, nvidia_runtime: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "nvidia_runtime_given": nvidia_runtime,
        "gpu_required": _outcome(
            lambda: cudamod.check_host("required", None, host, nvidia_runtime)
        ),
        # The GPU half alone: as if the engine had the nvidia runtime.
        "gpu_required_with_runtime": _outcome(
            lambda: cudamod.check_host("required", None, host, True)
        ),
    }
    cuda: dict[str, object] = {}
    if not host.cuda_driver_version:
        cuda["skipped"] = "NVML gave no CUDA driver version"
    else:
        try:
            versions = _neighbours(host.cuda_driver_version)
        except ValueError as exc:
            versions = {}
            cuda["skipped"] = f"unreadable CUDA driver version: {exc}"
        for label, version in versions.items():
            result = _outcome(lambda v=version: cudamod.check_host("auto", v, host, nvidia_runtime))
            expected = "error" if label.endswith("_above") else "ok"
            cuda[label] = {"cuda": version, "expected": expected, **result}
            cuda[label]["as_expected"] = (
                result["outcome"] == expected
                and result.get("class", "HostRequirementError") == "HostRequirementError"
            )
    out["cuda"] = cuda
    floor: dict[str, object] = {}
    try:
        floor.update(template_cuda())
    except Exception as exc:
        floor["template_error"] = _error(exc)
    wanted = floor.get("cuda")
    if isinstance(wanted, str):
        try:
            minimum = cudamod.min_driver_for_cuda(wanted)
        except Exception as exc:
            floor["min_driver_error"] = _error(exc)
        else:
            floor["min_driver"] = minimum
            floor["driver"] = host.driver_version
            floor.update(_outcome(lambda: cudamod.check_driver_for_lock(minimum, host)))
    out["template_driver_floor"] = floor
    return out


def _run(argv: list[str], timeout: float) -> dict[str, object]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        return {"argv": argv, "error": _error(exc)}
    except subprocess.TimeoutExpired as exc:
        return {"argv": argv, "error": {"type": "TimeoutExpired", "message": str(exc)}}
    return {
        "argv": argv,
        "rc": done.returncode,
        "stdout": done.stdout[-8000:],
        "stderr": done.stderr[-4000:],
    }


def docker_section(docker: str, timeout: float) -> dict[str, object]:
    """`docker info`; with an nvidia runtime or CDI, one `--gpus all` container's nvidia-smi -L."""
    out: dict[str, object] = {"docker": docker}
    if shutil.which(docker) is None:
        out["skipped"] = f"no `{docker}` on PATH"
        return out
    info = _run([docker, "info", "--format", "{{json .}}"], timeout)
    out["info_rc"] = info.get("rc")
    if info.get("rc") != 0:
        out["skipped"] = "`docker info` failed"
        out["info"] = info
        return out
    try:
        data = json.loads(str(info["stdout"]))
    except ValueError as exc:
        out["skipped"] = f"`docker info` printed no JSON: {exc}"
        out["info"] = info
        return out
    runtimes = sorted((data.get("Runtimes") or {}).keys())
    cdi_dirs = list(data.get("CDISpecDirs") or [])
    cdi_files = sorted(
        str(p)
        for d in cdi_dirs
        if Path(d).is_dir()
        for p in Path(d).iterdir()
        if "nvidia" in p.name
    )
    out.update(
        server_version=data.get("ServerVersion", ""),
        runtimes=runtimes,
        default_runtime=data.get("DefaultRuntime", ""),
        cdi_spec_dirs=cdi_dirs,
        cdi_nvidia_specs=cdi_files,
    )
    if "nvidia" not in runtimes and not cdi_files:
        out["skipped"] = "the engine has no nvidia runtime and no nvidia CDI spec"
        return out
    images = _run([docker, "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout)
    names = [
        line for line in str(images.get("stdout", "")).splitlines() if line and "<none>" not in line
    ]
    if not names:
        out["skipped"] = "no local image to run (nothing can be pulled here)"
        out["images"] = images
        return out
    image = names[0]
    out["image"] = image
    out["run"] = _run(
        [docker, "run", "--rm", "--gpus", "all", "--entrypoint", "nvidia-smi", image, "-L"],
        timeout,
    )
    return out


# ---------------------------------------------------------------- main


def collect(loader: ModuleLoader, docker: str | None, timeout: float) -> tuple[dict[str, Any], Any]:
    """The report and the GPU report to replay (None where the gateway itself broke)."""
    result: dict[str, Any] = {"schema": SCHEMA}
    result["environment"] = _section(lambda: environment_section(loader))
    result["raw_nvml"] = _section(lambda: raw_nvml(loader))
    report: GpuReport | None = None
    try:
        report = NvmlGateway(module_loader=loader).read()
        result["gateway_report"] = replay_dict(report)
    except Exception as exc:  # the gateway promises never to raise: record it if it does
        result["gateway_report"] = {
            "section_error": _error(exc),
            "traceback": traceback.format_exc(),
        }
    if docker:
        result["docker"] = _section(lambda: docker_section(docker, timeout))
    else:
        result["docker"] = {"skipped": "--no-docker"}
    docker_info = result["docker"] if isinstance(result["docker"], dict) else {}
    runtimes = docker_info.get("runtimes") or []
    nvidia_runtime = "nvidia" in runtimes or bool(docker_info.get("cdi_nvidia_specs"))
    engine_version = str(docker_info.get("server_version", ""))
    if report is not None:
        host: HostInfo | None = None
        try:
            host = host_info(report)
            result["host_info"] = asdict(host)
        except Exception as exc:
            result["host_info"] = {"section_error": _error(exc)}
        if host is not None:
            h = host

            def fingerprint() -> dict[str, object]:
                section = host_section(h, engine_version)
                return {"section": asdict(section), "hash": section_hash(section)}

            result["host_fingerprint"] = _section(fingerprint)
            result["checks"] = _section(lambda: checks(h, nvidia_runtime))
    return result, report


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None, module_loader: ModuleLoader | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the JSON files")
    parser.add_argument("--docker", default="docker", help="docker CLI to try (default: docker)")
    parser.add_argument("--no-docker", action="store_true", help="skip the container check")
    parser.add_argument("--timeout", type=float, default=60.0, help="per docker command, s")
    args = parser.parse_args(argv)
    loader = module_loader or _import_pynvml
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result, report = collect(loader, None if args.no_docker else args.docker, args.timeout)
    except Exception as exc:  # a bug in this script: still leave a report behind
        result, report = (
            {"schema": SCHEMA, "fatal": _error(exc), "tb": traceback.format_exc()},
            None,
        )
    if report is not None:
        replay = args.out / REPLAY_NAME

        def round_trip() -> dict[str, object]:
            _write(replay, replay_dict(report))
            again = RecordedGpus(str(replay)).read()
            return {
                "file": REPLAY_NAME,
                "report_matches": again == report,
                "host_info_matches": asdict(host_info(again)) == result.get("host_info"),
            }

        result["replay"] = _section(round_trip)
    _write(args.out / REPORT_NAME, result)
    summary = result.get("gateway_report", {})
    gpus = summary.get("gpus", []) if isinstance(summary, dict) else []
    print(f"gpu_check: {len(gpus)} GPU(s); wrote {args.out / REPORT_NAME}", flush=True)
    if isinstance(summary, dict) and summary.get("error"):
        print(f"gpu_check: NVML error: {summary['error']}", flush=True)
    print(json.dumps(result.get("checks", {}), indent=1, sort_keys=True)[:6000], flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
