"""envctl info."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cli.context import AppContext
from cli.output import emit_json, human_bytes, table

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def info_cmd(obj: AppContext, as_json: bool) -> None:
    """Show the host: CPU, memory, kernel, engine and runtimes, GPUs, driver and CUDA.

    The host is where the engine runs containers: the engine's machine when DOCKER_HOST or
    the Docker context names a remote one."""
    from envd.v1 import envd_pb2 as pb

    host = obj.client().host_info(pb.HostInfoRequest(), timeout=60)
    if as_json or obj.as_json:
        emit_json(host)
        return
    engine = host.engine
    rows = [
        (
            "host",
            f"{engine.name or '?'}, the remote engine's machine"
            if engine.remote
            else "this machine",
        ),
        ("os", host.os),
        ("kernel", host.kernel),
        ("cpu", f"{host.cpu_model} ({host.arch}, {host.cpu_count} cores)"),
        ("memory", human_bytes(host.memory_bytes)),
        ("engine at", _where(engine)),
        (
            "engine",
            f"{engine.product or 'Docker'} {engine.version} (API {engine.api_version}"
            f"{f', {engine.image_store} image store' if engine.image_store else ''}"
            f"{_privilege(engine)}), "
            f"runtimes: {', '.join(engine.runtimes) or '-'}"
            if engine.reachable
            else f"unreachable: {engine.error}",
        ),
    ]
    if engine.reachable:
        rows.append(("engine id", engine.engine_id or "-"))
    rows.append(("nvidia runtime", "yes" if engine.nvidia_runtime else "no"))
    if host.gpus:
        rows.append(("driver", f"{host.driver_version} (CUDA {host.cuda_driver_version})"))
    else:
        rows.append(("gpus", f"none ({host.gpu_error or 'no NVIDIA GPU found'})"))
    if host.gpu_source:
        rows.append(("gpus from", host.gpu_source))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    if host.gpus:
        click.echo("")
        table(
            ["gpu", "model", "memory", "compute", "uuid"],
            [
                (g.index, g.name, human_bytes(g.memory_bytes), g.compute_capability, g.uuid)
                for g in host.gpus
            ],
        )


def _where(engine: pb.EngineInfo) -> str:
    """ "tcp://gpu1:2376 (remote, context gpu1)": where the engine is and how it was chosen."""
    how = f"context {engine.context}" if engine.context else "DOCKER_HOST"
    return f"{engine.host or '-'} ({'remote' if engine.remote else 'local'}, {how})"


def _privilege(engine: pb.EngineInfo) -> str:
    """The engine's privilege, said for Podman (users run it either way, ", rootless" or
    ", rootful"), and for Docker only when rootless."""
    if engine.rootless:
        return ", rootless"
    return ", rootful" if engine.product == "Podman" else ""
