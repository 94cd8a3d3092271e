"""Podman (Debian 12's podman 4.3) for tests, served through its Docker-compatible API.

Rootful: `podman system service --time=0 unix://SOCKET` with its own storage (`--root`,
`--runroot`, `--tmpdir` under a folder in /var/tmp), so the machine's podman state is
untouched. The registries.conf handed to it (CONTAINERS_REGISTRIES_CONF) marks the tests'
local registry insecure (podman, unlike Docker, does not treat 127.0.0.0/8 as insecure);
/etc is never edited. Everything (containers, images, mounts, the folder) is removed on exit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.remote_engine import _alive


class PodmanUnavailable(RuntimeError):
    """Why this machine cannot serve Podman (its tests are skipped)."""


def why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "rootful Podman needs root"
    for tool in ("podman", "catatonit", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    return None


def _storage(folder: Path) -> list[str]:
    return [
        "--root", str(folder / "storage"), "--runroot", str(folder / "run"),
        "--tmpdir", str(folder / "tmp"), "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_REGISTRIES_CONF"] = str(folder / "registries.conf")
    env["CONTAINERS_CONF"] = str(folder / "containers.conf")
    env.pop("DOCKER_HOST", None)
    return env


def _unmount_under(folder: Path) -> None:
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(str(folder) + "/")
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _teardown(folder: Path, pid: int) -> None:
    if pid and _alive(pid):
        subprocess.run(
            ["podman", *_storage(folder), "rm", "-af", "-t", "0"],
            env=_env(folder), capture_output=True, timeout=120,
        )  # fmt: skip
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    # Its storage (images, layers) lives in the folder: reset it, then unmount what is left.
    subprocess.run(
        ["podman", *_storage(folder), "system", "reset", "-f"],
        env=_env(folder), capture_output=True, timeout=120,
    )  # fmt: skip
    _unmount_under(folder)
    shutil.rmtree(folder, ignore_errors=True)


def reap_stale() -> None:
    """Remove services whose test process died without cleaning up."""
    for folder in Path("/var/tmp").glob("envd-podman-*"):
        try:
            record = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(record["owner"])):
            continue
        _teardown(folder, int(record.get("pid", 0)))


def podman_cli(host: str) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env) of the podman CLI on the storage of the service at host."""
    folder = Path(host.removeprefix("unix://")).parent
    return ["podman", *_storage(folder)], _env(folder)


@contextmanager
def podman_service(registries: tuple[str, ...] = ()) -> Iterator[str]:
    """Yield the DOCKER_HOST ("unix:///var/tmp/envd-podman-.../podman.sock") of a fresh,
    empty rootful Podman; `registries` ("host:port") are marked insecure."""
    reason = why_unavailable()
    if reason:
        raise PodmanUnavailable(reason)
    reap_stale()
    folder = Path(tempfile.mkdtemp(prefix="envd-podman-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    entries = "".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in registries)
    (folder / "registries.conf").write_text(
        'unqualified-search-registries = ["docker.io"]\n' + entries
    )
    # Podman gives containers RLIMIT_NOFILE 1048576 and NPROC 4194304 unless told; where it
    # may not raise its own limits that far (this sandbox: no CAP_SYS_RESOURCE) runc fails
    # "error setting rlimit type 7" (or 6). Containers get the limits the service keeps: ours
    # for NOFILE, and for NPROC at most 32768 (what podman 4.3 lowers its own to, observed).
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 32768)
    (folder / "containers.conf").write_text(
        '[containers]\ninit_path = "/usr/bin/catatonit"\n'
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        f'[engine]\nstatic_dir = "{folder}/libpod"\nvolume_path = "{folder}/volumes"\n'
    )
    socket = folder / "podman.sock"
    host = f"unix://{socket}"
    log_path = folder / "service.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["podman", *_storage(folder), "system", "service", "--time=0", host],
                env=_env(folder), stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        (folder / "state.json").write_text(json.dumps({"owner": os.getpid(), "pid": proc.pid}))
        env = {**os.environ, "DOCKER_HOST": host}
        env.pop("DOCKER_CONTEXT", None)
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(
                ["docker", "version", "-f", "{{.Server.Version}}"],
                env=env, capture_output=True, timeout=10,
            )  # fmt: skip
            if ok.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise PodmanUnavailable(f"podman system service did not come up:\n{tail}")
            time.sleep(0.3)
        yield host
    finally:
        _teardown(folder, proc.pid if proc is not None else 0)
        if proc is not None:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
