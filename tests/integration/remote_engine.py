"""A second, "remote" Docker engine for tests: its own dockerd on tcp://127.0.0.1:PORT.

Privileged containers are refused on this machine (no docker-in-docker), so the second engine
is a dockerd in its own mount namespace (`unshare -m`) with its own data root, exec root,
pidfile and bridge, and an empty tmpfs over the folders where tests keep projects (/tmp, /work,
/root, /home, and /etc/docker): like a team's GPU server, it cannot see the CLI's files, only
what comes over its API. Its containers reach the package indexes through a MASQUERADE rule
for its bridge. Everything (process, bridge, iptables rules, storage) is removed on exit.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.registry import free_port

# /etc/docker too: its key.json is the engine ID, and a different machine has its own.
HIDDEN = ("/tmp", "/work", "/root", "/home", "/etc/docker")


class RemoteEngineUnavailable(RuntimeError):
    """Why this machine cannot run a second engine (the tests that need one are skipped)."""


def why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a second dockerd needs root"
    for tool in ("dockerd", "unshare", "ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for word in routes.split() if "/" in word]
    for third in range(200, 255):
        net = ipaddress.ip_network(f"172.31.{third}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RemoteEngineUnavailable("no free 172.31.x.0/24 subnet for the second engine's bridge")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def remote_engine() -> Iterator[str]:
    """Yield the DOCKER_HOST of a fresh, empty second engine ("tcp://127.0.0.1:PORT")."""
    reason = why_unavailable()
    if reason:
        raise RemoteEngineUnavailable(reason)
    # Not under /tmp: that folder is hidden from the engine.
    root = Path(tempfile.mkdtemp(prefix="envd-remote-", dir="/var/tmp"))
    port = free_port()
    bridge = f"envdr{port % 100000}"
    net = _free_subnet()
    gateway = f"{next(net.hosts())}/{net.prefixlen}"
    rules = [
        ("-t", "nat", "POSTROUTING", "-s", str(net), "!", "-o", bridge, "-j", "MASQUERADE"),
        ("-t", "filter", "FORWARD", "-i", bridge, "-j", "ACCEPT"),
        ("-t", "filter", "FORWARD", "-o", bridge, "-m", "conntrack", "--ctstate",
         "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    ]  # fmt: skip
    added: list[tuple[str, ...]] = []
    proc: subprocess.Popen[bytes] | None = None
    log_path = root / "dockerd.log"
    try:
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("ip", "addr", "add", gateway, "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        for table_flag, table, chain, *spec in rules:
            _run("iptables", table_flag, table, "-I", chain, "1", *spec)
            added.append((table_flag, table, chain, *spec))
        hide = " ".join(f"mount -t tmpfs tmpfs {d};" for d in HIDDEN if Path(d).is_dir())
        script = (
            f"{hide} exec dockerd --data-root {root}/data --exec-root {root}/exec"
            f" --pidfile {root}/docker.pid -H tcp://127.0.0.1:{port} --bridge {bridge}"
            " --iptables=false --ip-masq=false --storage-driver overlay2"
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        host = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "DOCKER_HOST": host}
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(
                ["docker", "version", "-f", "{{.Server.Version}}"],
                env=env,
                capture_output=True,
                timeout=10,
            )
            if ok.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RemoteEngineUnavailable(f"the second dockerd did not come up:\n{tail}")
            time.sleep(0.3)
        yield host
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for table_flag, table, chain, *spec in reversed(added):
            subprocess.run(["iptables", table_flag, table, "-D", chain, *spec], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        # Its overlay mounts lived in its own mount namespace, gone with it.
        shutil.rmtree(root, ignore_errors=True)
