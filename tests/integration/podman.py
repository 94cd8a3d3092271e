"""Podman (Debian 12's podman 4.3) for tests, served through its Docker-compatible API.

Rootful (`podman_service`): `podman system service --time=0 unix://SOCKET` with its own
storage (`--root`, `--runroot`, `--tmpdir` under a folder in /var/tmp), so the machine's podman
state is untouched. The registries.conf handed to it (CONTAINERS_REGISTRIES_CONF) marks the tests'
local registry insecure (podman, unlike Docker, does not treat 127.0.0.0/8 as insecure);
/etc is never edited. Everything (containers, images, mounts, the folder) is removed on exit.

Rootless (`rootless_podman_service`): the same, served by an unprivileged user (ROOTLESS_USER,
made when missing, with subordinate ids; the account is kept) through `setpriv`, with its own
HOME, XDG_RUNTIME_DIR, storage (native overlay), containers.conf and registries.conf, all in a
folder in /var/tmp that the user owns. Its containers' networks are slirp4netns, which needs
/dev/net/tun openable by the user (scripts/setup.sh makes it 0666, Debian's default). Teardown
removes the containers, the storage, the user's pause process (the user namespace's holder)
and the folder.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    return _why_no_runtime()


def _why_no_runtime() -> str | None:
    if _hybrid_cgroups() and shutil.which("runc", path=PATH) is None:
        return (
            "this host's cgroups are hybrid, where crun (Podman's default runtime) refuses "
            "every container, and runc is not installed"
        )
    return None


# On a host whose cgroups are hybrid (v1 controllers mounted, and the unified v2 hierarchy
# beside them holding a controller of its own, as hugetlb on some kernels) crun refuses every
# container ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2");
# runc, which Docker runs on the same host, does not: the services use it there.
HYBRID_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"


def _hybrid_cgroups() -> bool:
    try:
        return bool(Path(HYBRID_CONTROLLERS).read_text().split())
    except OSError:
        return False  # cgroup v2 alone (or v1 alone): crun runs


def _runtime() -> str:
    """The OCI runtime the services are told to use ("": Podman's default, crun)."""
    return "runc" if _hybrid_cgroups() else ""


ROOTLESS_USER = "envdrl"
SUBIDS = ("100000", "65536")  # given to ROOTLESS_USER when it has none (start, count)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PYTHON = "/usr/bin/python3"  # Debian's 3.11: the venv's cp311 packages load on it


def _record(folder: Path) -> dict[str, object]:
    try:
        found = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _user_of(folder: Path) -> str:
    """The user a service's folder belongs to ("" for a rootful one)."""
    return str(_record(folder).get("user", ""))


def _storage(folder: Path) -> list[str]:
    rootless = ["--storage-driver", "overlay"] if _user_of(folder) else []
    return [
        "--root", str(folder / "storage"), "--runroot", str(folder / "run"),
        "--tmpdir", str(folder / "tmp"), "--cgroup-manager", "cgroupfs",
        "--events-backend", "file", *rootless,
    ]  # fmt: skip


def _as_user(user: str) -> list[str]:
    """The argv prefix that runs a command as `user` ("": as we are)."""
    if not user:
        return []
    return ["setpriv", "--reuid", user, "--regid", user, "--init-groups"]


TMP = "spool"  # the service's $TMPDIR, in its folder


def _env(folder: Path) -> dict[str, str]:
    user = _user_of(folder)
    if user:  # the user's own, from nothing of ours (HOME, runtime dir: in the folder)
        env = {
            "PATH": PATH, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
            "HOME": str(folder / "home"), "XDG_RUNTIME_DIR": str(folder / "xdg"),
        }  # fmt: skip
    else:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
    env["CONTAINERS_REGISTRIES_CONF"] = str(folder / "registries.conf")
    env["CONTAINERS_CONF"] = str(folder / "containers.conf")
    # The API's image load spools the upload to $TMPDIR (else /var/tmp) as api_load.tar* and
    # leaves it there (224 MB a load, seen): in the folder, it goes with the folder.
    env["TMPDIR"] = str(folder / TMP)
    return env


def _podman(folder: Path) -> list[str]:
    return [*_as_user(_user_of(folder)), "podman", *_storage(folder)]


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
            [*_podman(folder), "rm", "-af", "-t", "0"],
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
        [*_podman(folder), "system", "reset", "-f"],
        env=_env(folder), capture_output=True, timeout=120,
    )  # fmt: skip
    if _user_of(folder):
        _stop_pause_process(folder)
    _end_leftovers(folder)
    _unmount_under(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _stop_pause_process(folder: Path) -> None:
    """End the rootless user namespace's holder (`catatonit -P`) this service started: the
    one its tmpdir names, and only if it is that user's catatonit."""
    try:
        pid = int((folder / "tmp" / "pause.pid").read_text().strip())
        owner = Path(f"/proc/{pid}").stat().st_uid
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if owner != pwd.getpwnam(_user_of(folder)).pw_uid or b"catatonit" not in command:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _end_leftovers(folder: Path) -> None:
    """End what the service started and left running: conmon keeps an exec session's monitor
    up to 5 minutes after the exec (`--exit-delay 300`); each names the folder's storage."""
    mark = os.fsencode(str(folder) + "/")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if mark in cmdline.read_bytes() and int(cmdline.parent.name) != os.getpid():
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in found) and time.monotonic() < deadline:
            time.sleep(0.1)


def _running(pid: int) -> bool:
    """Alive and not a zombie (one reaped by its parent, not by us)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def reap_stale() -> None:
    """Remove services whose test process died without cleaning up."""
    for folder in Path("/var/tmp").glob("envd-podman-*"):
        record = _record(folder)
        if not record or _alive(int(str(record["owner"]))):
            continue
        _teardown(folder, int(str(record.get("pid", 0))))


def podman_cli(host: str) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env) of the podman CLI on the storage of the service at host (as the
    service's user, for a rootless one)."""
    folder = Path(host.removeprefix("unix://")).parent
    return _podman(folder), _env(folder)


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
    (folder / TMP).mkdir()
    with _serve(folder, registries, user="") as host:
        yield host


@dataclass(frozen=True)
class RootlessPodman:
    """A rootless Podman service and the user it runs as."""

    host: str  # "unix:///var/tmp/envd-podman-rl-.../podman.sock"
    folder: Path  # the user's: the service's state, and `workdir`s
    user: str
    uid: int
    gid: int

    def as_user(self) -> list[str]:
        """The argv prefix that runs a command as the service's user."""
        return _as_user(self.user)

    def env(self) -> dict[str, str]:
        """The user's environment (HOME and XDG_RUNTIME_DIR in the folder; nothing of ours)."""
        env = _env(self.folder)
        del env["CONTAINERS_REGISTRIES_CONF"], env["CONTAINERS_CONF"]
        return env

    def envd_env(self, home: Path, **more: str) -> dict[str, str]:
        """The environment envctl and envd run in as the user (`envd_argv`): this service's
        engine, `home` as ENVD_HOME (its socket there), the cache in the folder, and this
        checkout with the venv's packages on PYTHONPATH (for USER_PYTHON)."""
        import sysconfig

        checkout = Path(__file__).resolve().parents[2]
        env = self.env()
        packages = dict.fromkeys((sysconfig.get_path("purelib"), sysconfig.get_path("platlib")))
        env.update(
            PATH=f"{env['PATH']}:{sysconfig.get_path('scripts')}",  # uv: a file, not a link
            ENVD_HOME=str(home),
            ENVD_SOCKET=str(home / "envd.sock"),
            ENVD_CACHE=str(self.folder / "work" / "cache"),
            PYTHONPATH=":".join((str(checkout), *packages)),
            PYTHONDONTWRITEBYTECODE="1",
            DOCKER_HOST=self.host,
            **more,
        )
        env.pop("XDG_RUNTIME_DIR", None)  # the daemon's socket is ENVD_SOCKET, in the home
        return env

    def envd_argv(self, module: str = "cli.main") -> list[str]:
        """`python -m module` as the user, on a Python it can run (the venv's python3 is a
        link into /root, 0700: USER_PYTHON has the same version and ABI)."""
        return [*self.as_user(), USER_PYTHON, "-m", module]

    def why_envd_cannot_run(self) -> str | None:
        """Why the user cannot run this checkout's envd (None when it can)."""
        import sys

        if not Path(USER_PYTHON).is_file():
            return f"{USER_PYTHON} is missing (envd runs on it as {self.user})"
        probe = subprocess.run(
            [*self.as_user(), USER_PYTHON, "-c",
             "import sys; import cli.main, envd.daemon.serve; print(sys.version_info[:2])"],
            env=self.envd_env(self.folder / "home"), cwd=self.folder, capture_output=True,
            text=True,
        )  # fmt: skip
        if probe.returncode != 0:
            return f"{self.user} cannot import envd with {USER_PYTHON}: {probe.stderr[-500:]}"
        if probe.stdout.strip() != str(sys.version_info[:2]):
            return f"{USER_PYTHON} is {probe.stdout.strip()}, this one {sys.version_info[:2]}"
        return None

    def seed_cache(self, cache: Path, lock: dict[str, object]) -> None:
        """Copy the Debian base tarball `lock` names from `cache` (root's, 0700) into the
        user's cache: made again with mmdebstrap otherwise (minutes, the same bytes)."""
        base = lock.get("base")
        wanted = str(base.get("tarball_sha256", "")) if isinstance(base, dict) else ""
        mine = self.folder / "work" / "cache" / "debian"
        mine.mkdir(parents=True, exist_ok=True)
        for meta in (cache / "debian").glob("*.json"):
            try:
                said = json.loads(meta.read_text()).get("sha256", "")
            except (OSError, ValueError, AttributeError):
                continue
            tar = meta.with_suffix(".tar")
            if wanted and said == wanted and tar.is_file() and not (mine / tar.name).exists():
                shutil.copy(tar, mine / tar.name)
                shutil.copy(meta, mine / meta.name)
        self.give(mine.parent)

    def workdir(self, name: str) -> Path:
        """A fresh folder of the user's, removed with the service."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.folder / "work"))
        os.chown(path, self.uid, self.gid)
        return path

    def give(self, path: Path) -> None:
        """Hand what we wrote under `path` to the user."""
        for top, dirs, files in os.walk(path):
            for name in (top, *(os.path.join(top, n) for n in (*dirs, *files))):
                os.lchown(name, self.uid, self.gid)


def _subids(user: str) -> bool:
    """Whether `user` has subordinate uids and gids (newuidmap maps them)."""
    for table in (Path("/etc/subuid"), Path("/etc/subgid")):
        try:
            lines = table.read_text().splitlines()
        except OSError:
            return False
        if not any(line.split(":")[0] == user for line in lines):
            return False
    return True


def ensure_user(user: str = ROOTLESS_USER) -> pwd.struct_passwd:
    """The unprivileged user, made (with subordinate ids) when missing; kept afterwards."""
    try:
        found = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", user],
            check=True, capture_output=True,
        )  # fmt: skip
        found = pwd.getpwnam(user)
    if not _subids(user):
        first, count = SUBIDS
        last = str(int(first) + int(count) - 1)
        subprocess.run(
            ["usermod", "--add-subuids", f"{first}-{last}", "--add-subgids", f"{first}-{last}",
             user],
            capture_output=True,
        )  # fmt: skip
    return found


def why_rootless_unavailable(user: str = ROOTLESS_USER) -> str | None:
    """Why rootless Podman cannot run here, once the user is made; None when it can."""
    if os.geteuid() != 0:
        return "the tests make and switch to an unprivileged user, which needs root"
    for tool in ("podman", "catatonit", "docker", "setpriv", "useradd", "slirp4netns"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/setup.sh installs it)"
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package uidmap; scripts/setup.sh installs it)"
    if reason := _why_no_runtime():
        return reason
    try:
        ensure_user(user)
    except (subprocess.CalledProcessError, KeyError) as exc:
        return f"could not make the user {user}: {exc}"
    if not _subids(user):
        return f"{user} has no subordinate uids/gids in /etc/subuid and /etc/subgid"
    tun = subprocess.run(
        [*_as_user(user), "sh", "-c", "exec 3<>/dev/net/tun"],
        capture_output=True, text=True, env={"PATH": PATH},
    )  # fmt: skip
    if tun.returncode != 0:
        try:
            mode = oct(os.stat("/dev/net/tun").st_mode & 0o777)
        except OSError:
            mode = "missing"
        return (
            f"/dev/net/tun cannot be opened by {user} ({mode}): slirp4netns needs it; "
            "scripts/setup.sh makes it 0666 (Debian's default)"
        )
    return None


@contextmanager
def rootless_podman_service(
    registries: tuple[str, ...] = (), user: str = ROOTLESS_USER
) -> Iterator[RootlessPodman]:
    """A fresh, empty Podman served by `user` (made when missing); `registries` ("host:port")
    are marked insecure."""
    reason = why_rootless_unavailable(user)
    if reason:
        raise PodmanUnavailable(reason)
    reap_stale()
    account = pwd.getpwnam(user)
    folder = Path(tempfile.mkdtemp(prefix="envd-podman-rl-", dir="/var/tmp"))
    os.chmod(folder, 0o755)
    for sub in ("home", "xdg", "work", TMP):
        (folder / sub).mkdir(mode=0o700 if sub == "xdg" else 0o755)
    os.chmod(folder / "xdg", 0o700)
    with _serve(folder, registries, user=user):
        for top in (folder, folder / "home", folder / "xdg", folder / "work", folder / TMP):
            os.chown(top, account.pw_uid, account.pw_gid)
        yield RootlessPodman(
            host=f"unix://{folder / 'podman.sock'}", folder=folder, user=user,
            uid=account.pw_uid, gid=account.pw_gid,
        )  # fmt: skip


@contextmanager
def _serve(folder: Path, registries: tuple[str, ...], user: str) -> Iterator[str]:
    """Serve Podman from `folder` (as `user`, "" for root); everything goes on exit."""
    # The record first: _storage/_env/_teardown read the user from it, and a killed test's
    # leftovers are found by it.
    (folder / "state.json").write_text(json.dumps({"owner": os.getpid(), "pid": 0, "user": user}))
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
        + (f'runtime = "{runtime}"\n' if (runtime := _runtime()) else "")
    )
    if user:
        account = pwd.getpwnam(user)
        for top in (folder, folder / "home", folder / "xdg", folder / TMP):
            os.chown(top, account.pw_uid, account.pw_gid)
    socket = folder / "podman.sock"
    host = f"unix://{socket}"
    log_path = folder / "service.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*_podman(folder), "system", "service", "--time=0", host],
                env=_env(folder), stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        record = {"owner": os.getpid(), "pid": proc.pid, "user": user}
        (folder / "state.json").write_text(json.dumps(record))
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
