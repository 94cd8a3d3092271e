"""Docker 26 (Debian 13's `docker.io`) for tests, beside the machine's own engine.

No image registry is reachable here and privileged containers are refused, so the engine runs
from a Debian 13 (trixie) root made with mmdebstrap (Debian's mirror is reachable), built once
per machine and kept under the test cache, keyed by the recipe and named by the docker.io
version it holds. Each engine is that root `chroot`ed in its own mount namespace
(`unshare -m`), with its own containerd (own root, state and socket), data root, exec root,
pidfile and bridge, listening on a unix socket in its own folder under /var/tmp.

The engine is local, as Docker 26 on a user's machine is: the folders where tests keep
projects, homes and the CA bundle (/tmp, /var/tmp, /work, /root, /home, /etc/ssl/certs) are
bound into the root at the same paths, so bind mounts and the enter fast path work as on the
host. `store="containerd"` sets `{"features": {"containerd-snapshotter": true}}`.
Everything (processes, bridge, iptables rules, storage) is removed on exit.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from tests.integration.remote_engine import _alive, _free_subnet, _run

SUITE = "trixie"
PACKAGES = ("docker.io", "containerd", "runc", "tini")
RECIPE = "1"  # bump when the root's recipe changes
MIRROR = "http://deb.debian.org/debian"
# Bound into the root at the same path: the engine sees what the host's engine would.
SHARED = ("/tmp", "/var/tmp", "/work", "/root", "/home", "/etc/ssl/certs",
          "/usr/share/ca-certificates", "/usr/local/share/ca-certificates")  # fmt: skip
Store = Literal["classic", "containerd"]
# The checkout itself (envd bind-mounts its agent from there): CI clones it under /check.
CHECKOUT_TOP = "/" + Path(__file__).resolve().parts[1]


class EngineUnavailable(RuntimeError):
    """Why this machine cannot run Docker 26 beside its engine (its tests are skipped)."""


def why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "running Docker 26 beside the machine's engine needs root"
    for tool in ("mmdebstrap", "unshare", "chroot", "ip", "iptables", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _cache_dir() -> Path:
    base = os.environ.get("ENVD_TEST_CACHE") or os.environ.get("ENVD_CACHE")
    return Path(base or "/tmp/envd-test-cache") / "engines"


def _version(root: Path) -> str:
    out = subprocess.run(
        ["dpkg-query", "--admindir", str(root / "var/lib/dpkg"), "-W", "-f=${Version}",
         "docker.io"],
        capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def trixie_root() -> tuple[Path, str]:
    """(the cached Debian 13 root holding docker.io, docker.io's version); built when missing.

    Named `<suite>-r<recipe>-docker.io_<version>`: a new version of the package on the mirror
    is picked up by removing the folder (or bumping RECIPE)."""
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    prefix = f"{SUITE}-r{RECIPE}-docker.io_"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per machine, also across test processes
        for found in sorted(cache.glob(prefix + "*")):
            if (found / ".complete").is_file():
                return found / "root", found.name.removeprefix(prefix)
        work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
        try:
            log = work / "mmdebstrap.log"
            with open(log, "wb") as out:
                done = subprocess.run(
                    ["mmdebstrap", "--variant=essential", f"--include={','.join(PACKAGES)}",
                     SUITE, str(work / "root"), MIRROR],
                    stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                )  # fmt: skip
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-2000:]
                raise EngineUnavailable(f"mmdebstrap could not build a {SUITE} root:\n{tail}")
            for mountpoint in (*SHARED, "/.old"):
                (work / "root" / mountpoint.lstrip("/")).mkdir(parents=True, exist_ok=True)
            version = _version(work / "root")
            if not version:
                raise EngineUnavailable(f"the {SUITE} root holds no docker.io")
            (work / ".complete").write_text(version + "\n")
            final = cache / f"{prefix}{version}"
            work.rename(final)
            return final / "root", version
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _engine_processes(sid: int) -> list[int]:
    """The engine's processes: its session (dockerd, containerd, and the shims, which leave
    the process group but not the session) and their children (containers), all in mount
    namespaces other than ours (so a reused session number is never mistaken for it)."""
    ours = os.readlink("/proc/self/ns/mnt")
    parents: dict[int, int] = {}
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            if os.readlink(f"/proc/{pid}/ns/mnt") == ours:
                continue
        except (OSError, IndexError, ValueError):
            continue
        parents[pid] = int(fields[1])
        if int(fields[3]) == sid:
            found.add(pid)
    while more := {p for p, parent in parents.items() if parent in found} - found:
        found |= more
    return sorted(found)


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _teardown(folder: Path, bridge: str, rules: list[tuple[str, ...]], sid: int) -> None:
    if sid:
        _signal(_engine_processes(sid), signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _engine_processes(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal(_engine_processes(sid), signal.SIGKILL)
    for table_flag, table, chain, *spec in reversed(rules):
        subprocess.run(["iptables", table_flag, table, "-D", chain, *spec], capture_output=True)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    # Its mounts (overlays, the root's binds) lived in its own mount namespace, gone with it.
    shutil.rmtree(folder, ignore_errors=True)


def reap_stale() -> None:
    """Remove engines whose test process died without cleaning up (killed by a timeout)."""
    for folder in Path("/var/tmp").glob("envd-d26-*"):
        try:
            record = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(record["owner"])):
            continue
        rules = [tuple(r) for r in record["rules"]]
        _teardown(folder, record["bridge"], rules, int(record.get("sid", 0)))


def _script(root: Path, folder: Path) -> str:
    shared = SHARED if CHECKOUT_TOP in SHARED else (*SHARED, CHECKOUT_TOP)
    binds = " ".join(
        f"mkdir -p {root}{d}; mount --rbind {d} {root}{d};" for d in shared if Path(d).is_dir()
    )
    inner = (
        "/.old/usr/bin/umount -l /.old || true;"
        f" containerd --config {folder}/containerd.toml >{folder}/containerd.log 2>&1 &"
        " i=0; while [ ! -S /run/containerd/containerd.sock ] && [ $i -lt 300 ];"
        " do sleep 0.1; i=$((i+1)); done;"
        f" exec dockerd --config-file {folder}/daemon.json"
    )
    # pivot_root, not chroot: `docker exec` joins a container's mount namespace at that
    # namespace's root, which is the container's only when the engine's root is the
    # namespace's (under a chroot it is the host's /, and exec runs outside the container).
    return (
        f"set -e; mount --bind {root} {root};"
        f" mount -t proc proc {root}/proc; mount --rbind /sys {root}/sys;"
        f" mount --rbind /dev {root}/dev; mount -t tmpfs tmpfs {root}/run; {binds}"
        f" mkdir -p {root}/.old; cd {root}; pivot_root . .old; cd /;"
        f" exec /bin/sh -c '{inner}'"
    )


def _remove_containers(host: str) -> None:
    env = {**os.environ, "DOCKER_HOST": host}
    listed = subprocess.run(
        ["docker", "ps", "-aq"], env=env, capture_output=True, text=True, timeout=60
    )
    if listed.stdout.split():
        subprocess.run(
            ["docker", "rm", "-f", *listed.stdout.split()],
            env=env,
            capture_output=True,
            timeout=120,
        )


@contextmanager
def docker26(store: Store) -> Iterator[str]:
    """Yield the DOCKER_HOST ("unix:///var/tmp/envd-d26-.../docker.sock") of a fresh, empty
    Docker 26 whose image store is `store`."""
    reason = why_unavailable()
    if reason:
        raise EngineUnavailable(reason)
    reap_stale()
    root, _version = trixie_root()
    folder = Path(tempfile.mkdtemp(prefix=f"envd-d26-{store}-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    bridge = f"envd26{folder.name[-6:]}".replace("_", "x")[:15]
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
    socket = folder / "docker.sock"
    (folder / "containerd.toml").write_text(
        "version = 2\n"
        f'root = "{folder}/containerd"\n'
        'state = "/run/containerd"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        '[grpc]\n  address = "/run/containerd/containerd.sock"\n'
    )
    config: dict[str, object] = {
        "data-root": f"{folder}/data",
        "exec-root": "/run/docker",
        "pidfile": f"{folder}/docker.pid",
        "hosts": [f"unix://{socket}"],
        "containerd": "/run/containerd/containerd.sock",
        "bridge": bridge,
        "iptables": False,
        "ip-masq": False,
        "storage-driver": "overlay2",
    }
    if store == "containerd":
        config["features"] = {"containerd-snapshotter": True}
        del config["storage-driver"]  # the snapshotter is containerd's overlayfs
    (folder / "daemon.json").write_text(json.dumps(config, indent=1))
    log_path = folder / "dockerd.log"
    host, up = f"unix://{socket}", False
    try:
        _run("ip", "link", "add", bridge, "type", "bridge")
        _run("ip", "addr", "add", gateway, "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        for table_flag, table, chain, *spec in rules:
            _run("iptables", table_flag, table, "-I", chain, "1", *spec)
            added.append((table_flag, table, chain, *spec))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 _script(root, folder)],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        record = {"owner": os.getpid(), "bridge": bridge, "rules": [list(r) for r in added],
                  "sid": proc.pid}  # fmt: skip
        (folder / "state.json").write_text(json.dumps(record))
        env = {**os.environ, "DOCKER_HOST": host}
        env.pop("DOCKER_CONTEXT", None)
        deadline = time.monotonic() + 90
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
                raise EngineUnavailable(f"Docker 26 ({store} store) did not come up:\n{tail}")
            time.sleep(0.3)
        up = True
        yield host
    finally:
        if up:  # containers first, as the engine stops them (warm ones would outlive it)
            _remove_containers(host)
        _teardown(folder, bridge, added, proc.pid if proc is not None else 0)
        if proc is not None:
            proc.wait(timeout=30)
