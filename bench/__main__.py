"""`make bench`: envd against what users would otherwise run, as ratios measured side by side.

Each case interleaves A (envd) and B (the plain tool) runs, so drift on a shared machine hits
both alike; the report gives the median and spread of each and the ratio of medians.
Benchmarks, not tests: nothing here fails for a slow machine.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("ENVD_BENCH_DIR", "/tmp/envd-bench"))
RESULTS = ROOT / "bench" / "results"
LABEL = os.environ.get("ENVD_BENCH_LABEL", "envd.bench=1")  # cleanup removes what has it
RUN_ID = f"{time.time_ns()}"
ENV = {
    **os.environ,
    "ENVD_HOME": str(WORK / "home"),
    "ENVD_SOCKET": str(WORK / "home" / "envd.sock"),
    "ENVD_CACHE": str(WORK / "cache"),
    "ENVD_ENGINE_LABELS": LABEL,
    "PYTHONPATH": str(ROOT),
}
ENVCTL = [sys.executable, "-m", "cli.main"]
VENV_PIP = "/opt/venv/bin/pip"


@dataclass(frozen=True)
class Mode:
    """How much to measure: quick (`make bench`), full, or smoke (`make bench-smoke`: every
    case once, on the small default template, nothing written)."""

    reps: int
    full: bool = False
    smoke: bool = False

    def times(self, factor: int) -> int:
        return 1 if self.smoke else self.reps * factor

    @property
    def template(self) -> str:
        return "default" if self.smoke else "sklearn"


@dataclass
class Case:
    name: str
    a_label: str
    b_label: str
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)
    target: str = ""  # e.g. "<= 1.5", from the issues
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.a) / statistics.median(self.b) if self.a and self.b else 0.0

    def met(self) -> str:
        if not self.target or not self.a or not self.b:
            return ""
        op, value = self.target.split()
        ok = self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)
        return "yes" if ok else "no"


def run(
    argv: list[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env or ENV, text=True, capture_output=True)
    if check and proc.returncode != 0:
        raise SystemExit(
            f"bench: `{' '.join(argv)}` exited {proc.returncode}:\n{proc.stderr.strip()[-2000:]}"
        )
    return proc


def envctl(*args: str) -> str:
    proc = run([*ENVCTL, *args], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"envctl {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def interleave(
    case: Case,
    reps: int,
    a: Callable[[], object],
    b: Callable[[], object],
    before_a: Callable[[], object] | None = None,
    before_b: Callable[[], object] | None = None,
) -> Case:
    for _ in range(reps):
        if before_a:
            before_a()
        case.a.append(timed(a))
        if before_b:
            before_b()
        case.b.append(timed(b))
    return case


def project(name: str, template: str, extra: str = "") -> Path:
    path = WORK / name
    path.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "environments" / template / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(text + f"name: {name}\n" + extra)
    return path


def image_of(path: Path) -> str:
    for p in json.loads(envctl("--json", "ls"))["projects"]:
        if p["path"] == str(path):
            return str(p["image"])
    raise SystemExit(f"{path} has no image")


def container_of(name: str) -> str:
    for c in json.loads(envctl("--json", "ps"))["containers"]:
        if c["project"] == name:
            return str(c["container_id"])
    raise SystemExit(f"{name} has no warm container")


def docker_build(context: Path, tag: str, no_cache: bool = False) -> None:
    argv = ["docker", "build", "-q", "-t", tag, str(context)]
    if no_cache:
        argv.insert(2, "--no-cache")
    run(argv, env={**ENV, "DOCKER_BUILDKIT": "0"})


def export(path: Path, dest: Path) -> Path:
    """The exported Dockerfile, plus the CA bundle this machine's proxy needs (baked: it is
    only the baseline, never an envd image)."""
    envctl("export", "dockerfile", str(path), "--output", str(dest))
    bundle = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    shutil.copyfile(bundle, dest / "ca.pem")
    text = (dest / "Dockerfile").read_text()
    (dest / "Dockerfile").write_text(with_pip_cert(text, "/tmp/ca.pem"))
    # A stamp unique to this run, so layers cached by an earlier bench run cannot answer.
    requirements = dest / "requirements.lock.txt"
    requirements.write_text(f"# bench run {RUN_ID}\n" + requirements.read_text())
    return dest


def with_pip_cert(dockerfile: str, cert: str) -> str:
    """The exported Dockerfile with `cert` copied in and given to pip (PIP_CERT) in its pip
    step. Fails loudly when the export no longer has the pip step this expects."""
    lines = dockerfile.splitlines()
    hits = 0
    for i, line in enumerate(lines):
        if not line.startswith("RUN ["):
            continue
        argv = json.loads(line.removeprefix("RUN "))
        if argv[:2] != ["sh", "-c"] or not argv[2].startswith(f"{VENV_PIP} install"):
            continue
        argv[2] = f"PIP_CERT={cert} {argv[2]}"
        lines[i] = f"COPY {Path(cert).name} {cert}\nRUN {json.dumps(argv)}"
        hits += 1
    if hits != 1:
        raise SystemExit(
            f'bench: expected one `RUN ["sh", "-c", "{VENV_PIP} install ..."]` step in the '
            f"exported Dockerfile, found {hits}; `envctl export dockerfile` changed, update "
            "bench/__main__.py (with_pip_cert)"
        )
    return "\n".join(lines) + "\n"


def add_package(spec: str, package: str) -> str:
    """envd.yaml text with one more requirement in its `packages:` list."""
    marker = "\npackages:"
    start = spec.find(marker)
    if start < 0:
        raise SystemExit("bench: the template has no `packages:` list")
    end = spec.index("\n", start + 1)
    return spec[: end + 1] + f"  - {package}\n" + spec[end + 1 :]


# ---------------------------------------------------------------------- cases


def hot_envctl() -> list[str]:
    """envctl as users start it for `enter`: the console script beside this interpreter (no
    `-m`, whose runpy costs milliseconds), with the byte code of its hot path compiled as `pip
    install` does (an editable checkout under PYTHONDONTWRITEBYTECODE has none: every start
    would compile cli/entering.py again)."""
    script = Path(sys.executable).with_name("envctl")
    if not script.is_file():
        return ENVCTL
    for folder in ("cli", "envd"):
        compileall.compile_dir(ROOT / folder, maxlevels=0, quiet=1)
    return [str(script)]


def bench_enter(mode: Mode) -> list[Case]:
    a = project("bench-a", "default")
    b = project("bench-b", "default")
    (b / "envd.yaml").write_text((b / "envd.yaml").read_text().replace('"0"', '"1"'))
    envctl("build", str(a))
    envctl("build", str(b))
    hot = hot_envctl()
    envctl("enter", str(a), "--", "true")
    container = container_of("bench-a")
    warm = interleave(
        Case("warm enter", "envctl enter P -- true", "docker exec C true", target="<= 0.5"),
        mode.times(3),
        lambda: run([*hot, "enter", str(a), "--", "true"]),
        lambda: run(["docker", "exec", container, "true"]),
    )
    image = image_of(a)
    cold = interleave(
        Case(
            "cold enter",
            "envctl enter (no warm container)",
            "docker run --rm IMAGE true",
            target="<= 1.1",
        ),
        mode.times(1),
        lambda: run([*hot, "enter", str(a), "--", "true"]),
        lambda: run(["docker", "run", "--rm", "--label", LABEL, image, "true"]),
        before_a=lambda: envctl("stop", "bench-a"),
    )
    swap = Case("swap", "enter A, B, A, B (per enter)", "docker exec (per exec)", target="<= 0.5")
    envctl("enter", str(a), "--", "true")
    envctl("enter", str(b), "--", "true")
    container, other = container_of("bench-a"), container_of("bench-b")
    for _ in range(mode.times(2)):
        for path in (a, b):
            swap.a.append(timed(lambda p=path: run([*hot, "enter", str(p), "--", "true"])))
        for c in (container, other):
            swap.b.append(timed(lambda c=c: run(["docker", "exec", c, "true"])))
    return [
        warm,
        cold,
        swap,
        *bench_pipes(mode, a, container),
        bench_runs_overhead(mode, a),
        bench_runs_data(mode),
    ]


def bench_remote(mode: Mode) -> list[Case]:
    """enter on a remote engine (a second dockerd that cannot see our files, as in the tests),
    envctl started as users start it (hot_envctl), against `docker exec` through the same
    DOCKER_HOST; and what syncing an unchanged
    1,000-file project into its volume adds (target: <= 100 ms). Left out where no second
    engine can run (it needs root)."""
    from tests.integration.remote_engine import RemoteEngineUnavailable, remote_engine

    engine = remote_engine()
    try:
        host = engine.__enter__()
    except RemoteEngineUnavailable as exc:
        print(f"bench: no second engine ({exc}): the remote enter cases are left out")
        return []
    home = WORK / "remote-home"
    env = {**ENV, "ENVD_HOME": str(home), "ENVD_SOCKET": str(home / "envd.sock")}
    env |= {"DOCKER_HOST": host}
    env.pop("DOCKER_CONTEXT", None)

    hot = hot_envctl()

    def remote(*args: str) -> str:
        proc = run([*hot, *args], check=False, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"envctl {' '.join(args)} (remote) failed:\n{proc.stderr}")
        return proc.stdout

    try:
        few = project("bench-remote", "default")
        many = project("bench-remote-many", "default")
        for i in range(1000):
            folder = many / f"pkg{i // 100}"
            folder.mkdir(exist_ok=True)
            (folder / f"m{i}.py").write_text(f"X = {i}\n")
        for path in (few, many):
            remote("build", str(path))
            remote("enter", str(path), "--", "true")  # the first sync sends everything
        found = run(["docker", "ps", "-q", "--filter", "label=envd.project=bench-remote"], env=env)
        container = found.stdout.split()[0]
        warm = interleave(
            Case(
                "remote enter",
                "envctl enter P -- true (DOCKER_HOST=tcp://)",
                "docker exec C true (same DOCKER_HOST)",
                target="<= 1.5",
            ),
            mode.times(3),
            lambda: remote("enter", str(few), "--", "true"),
            lambda: run(["docker", "exec", container, "true"], env=env),
        )
        synced = interleave(
            Case(
                "remote enter, 1,000 files",
                "enter -- true (1,000 unchanged files synced)",
                "enter -- true (3 files synced)",
            ),
            mode.times(3),
            lambda: remote("enter", str(many), "--", "true"),
            lambda: remote("enter", str(few), "--", "true"),
        )
        added = statistics.median(synced.a) - statistics.median(synced.b)
        synced.note = f"syncing 1,000 unchanged files adds {added * 1000:.0f} ms (target <= 100 ms)"
        return [warm, synced]
    finally:
        run([*ENVCTL, "stop", "--all"], check=False, env=env)
        run([*ENVCTL, "daemon", "stop"], check=False, env=env)
        engine.__exit__(None, None, None)


ENGINE_ROWS = ("docker26-classic", "docker26-containerd", "podman", "podman-rootless")


@dataclass
class EngineRow:
    """One engine of the matrix, as the bench drives it: envctl (and its daemon) on it, and
    the engine's own exec (`docker exec` / `podman exec`) for the baseline."""

    name: str  # "Docker 26 (classic store)", "Podman 4.3 (rootless)"
    envctl: list[str]
    env: dict[str, str]
    exec_argv: list[str]  # the engine's CLI, as whom and on which storage it runs
    exec_env: dict[str, str]
    folder: Path  # where its projects go (writable by envctl's user)
    give: Callable[[Path], None] = lambda path: None  # hands what we wrote to envctl's user
    seed: Callable[[dict[str, object]], None] = lambda lock: None  # its cache, for that lock
    note: str = ""


@contextmanager
def engine_row(kind: str, hot: list[str]) -> Iterator[EngineRow | None]:
    """The row `kind` of ENGINE_ROWS on a fresh engine (served as the tests serve it), or
    None where this machine cannot run that engine (said). The engine and all on it go on
    exit: stop envd's daemon first (`stop_envd`)."""
    from tests.integration.engines import EngineUnavailable, docker26
    from tests.integration.podman import (
        PodmanUnavailable,
        podman_cli,
        podman_service,
        rootless_podman_service,
    )

    home = WORK / f"{kind}-home"
    env = {**ENV, "ENVD_HOME": str(home), "ENVD_SOCKET": str(home / "envd.sock")}
    env.pop("DOCKER_CONTEXT", None)
    row: EngineRow | None = None
    try:
        if kind.startswith("docker26-"):
            store = kind.removeprefix("docker26-")
            with docker26(store) as host:  # type: ignore[arg-type]
                docker_env = {**os.environ, "DOCKER_HOST": host}
                docker_env.pop("DOCKER_CONTEXT", None)
                row = EngineRow(
                    f"Docker 26 ({store} store)", hot, env | {"DOCKER_HOST": host},
                    ["docker"], docker_env, WORK / kind,
                )  # fmt: skip
                yield row
        elif kind == "podman":
            with podman_service() as host:
                podman, podman_env = podman_cli(host)
                row = EngineRow(
                    "Podman 4.3 (rootful)", hot, env | {"DOCKER_HOST": host}, podman,
                    podman_env, WORK / kind,
                )  # fmt: skip
                yield row
        else:
            with rootless_podman_service() as rootless:
                reason = rootless.why_envd_cannot_run()
                if reason:
                    print(f"bench: no rootless Podman row ({reason}): left out")
                    yield None
                    return
                podman, podman_env = podman_cli(rootless.host)
                work = rootless.workdir("bench")
                cache = Path(ENV["ENVD_CACHE"])
                row = EngineRow(
                    "Podman 4.3 (rootless)", rootless.envd_argv(),
                    rootless.envd_env(work / "home", ENVD_ENGINE_LABELS=LABEL), podman,
                    podman_env, work, give=rootless.give,
                    seed=lambda lock: rootless.seed_cache(cache, lock),
                    note=f"envctl runs as {rootless.user} on {rootless.envd_argv()[-3]} -m "
                    "cli.main (the venv's console script is root's)",
                )  # fmt: skip
                yield row
    except (EngineUnavailable, PodmanUnavailable) as exc:
        if row is not None:
            raise
        print(f"bench: no {kind} here ({exc}): its cases are left out")
        yield None


def stop_envd(row: EngineRow) -> None:
    """The row's warm containers and daemon, stopped while its engine still runs."""
    run([*row.envctl, "stop", "--all"], check=False, env=row.env)
    run([*row.envctl, "daemon", "stop"], check=False, env=row.env)


def bench_engine(mode: Mode, row: EngineRow, path: Path) -> list[Case]:
    """warm enter on the row's engine against its own exec on the same container, and a
    no-op build there against the same no-op build on this machine's Docker (the same lock)."""

    def on_row(*args: str) -> str:
        proc = run([*row.envctl, *args], check=False, env=row.env)
        if proc.returncode != 0:
            raise SystemExit(f"envctl {' '.join(args)} ({row.name}) failed:\n{proc.stderr}")
        return proc.stdout

    row.folder.mkdir(parents=True, exist_ok=True)
    mine = row.folder / path.name
    mine.mkdir(exist_ok=True)
    for name in ("envd.yaml", "envd.lock"):
        shutil.copy(path / name, mine / name)
    row.give(row.folder)
    row.seed(json.loads((path / "envd.lock").read_text()))
    on_row("build", str(mine))
    on_row("enter", str(mine), "--", "true")
    found = run([*row.exec_argv, "ps", "-q", "--filter", f"label=envd.project={path.name}"],
                env=row.exec_env)  # fmt: skip
    container = found.stdout.split()[0]
    tool = "podman" if "podman" in row.exec_argv else "docker"
    warm = interleave(
        Case(
            f"{row.name}: warm enter",
            f"envctl enter P -- true ({row.name})",
            f"{tool} exec C true",
            target="<= 0.5",
            note=row.note,
        ),
        mode.times(3),
        lambda: on_row("enter", str(mine), "--", "true"),
        lambda: run([*row.exec_argv, "exec", container, "true"], env=row.exec_env),
    )
    noop = interleave(
        Case(
            f"{row.name}: no-op build",
            f"envctl build (unchanged, {row.name})",
            "envctl build (unchanged, this machine's Docker)",
        ),
        mode.times(2),
        lambda: on_row("build", str(mine)),
        lambda: envctl("build", str(path)),
    )
    return [warm, noop]


def bench_engines(mode: Mode, kinds: tuple[str, ...] = ENGINE_ROWS) -> list[Case]:
    """Every engine of the matrix (tests/integration/test_engines.py), one at a time: Docker 26
    with each image store, Podman rootful and rootless. Rows this machine cannot run are left
    out (said)."""
    path = project("bench-engines", mode.template)
    envctl("lock", str(path))
    envctl("build", str(path))  # the same lock on this machine's Docker: the no-op baseline
    hot = hot_envctl()
    cases: list[Case] = []
    for kind in kinds:
        with engine_row(kind, hot) as row:
            if row is None:
                continue
            try:
                cases += bench_engine(mode, row, path)
            finally:
                stop_envd(row)
    return cases


def _piped(argv: list[str], size: int, direction: str) -> None:
    """`size` bytes through the command's stdin ("in") or out of its stdout ("out")."""
    if direction == "in":
        with open("/dev/zero", "rb") as zero:
            feeder = subprocess.Popen(["head", "-c", str(size)], stdin=zero, stdout=subprocess.PIPE)
            subprocess.run(
                argv, env=ENV, stdin=feeder.stdout, stdout=subprocess.DEVNULL, check=True
            )
            feeder.wait()
    else:
        with open(os.devnull, "wb") as sink:
            subprocess.run(argv, env=ENV, stdin=subprocess.DEVNULL, stdout=sink, check=True)


def bench_pipes(mode: Mode, a: Path, container: str) -> list[Case]:
    """Bytes through enter's stdin and stdout against `docker exec -i` on the same container
    (the issue's target is >= 3x the throughput: a time ratio <= 0.33)."""
    size = (16 << 20) if mode.smoke else (1 << 30) if mode.full else (256 << 20)
    label = f"{size >> 20} MiB"
    cases = []
    for direction, inside in (("in", "cat > /dev/null"), ("out", f"head -c {size} /dev/zero")):
        envd_argv = [*ENVCTL, "enter", str(a), "--", "sh", "-c", inside]
        docker_argv = ["docker", "exec", "-i", container, "sh", "-c", inside]
        cases.append(
            interleave(
                Case(
                    f"pipe {label} {'into stdin' if direction == 'in' else 'out of stdout'}",
                    "envctl enter P -- sh -c ...",
                    "docker exec -i C sh -c ...",
                    target="<= 0.33",
                ),
                mode.times(1),
                lambda e=envd_argv, d=direction: _piped(e, size, d),
                lambda k=docker_argv, d=direction: _piped(k, size, d),
            )
        )
    return cases


def bench_runs_overhead(mode: Mode, a: Path) -> Case:
    """Warm enter of a project with a `runs:` section against the same without one."""
    r = project("bench-runs", "default")
    (r / "envd.yaml").write_text(
        (r / "envd.yaml").read_text() + "runs:\n  outputs: [out/]\n  metrics: [metrics.json]\n"
    )
    (r / "out").mkdir(exist_ok=True)
    envctl("build", str(r))
    envctl("enter", str(r), "--", "true")
    envctl("enter", str(a), "--", "true")
    return interleave(
        Case(
            "warm enter, runs: section",
            "enter -- true (runs: outputs, metrics)",
            "enter -- true (no runs:)",
            target="<= 1.1",
        ),
        mode.times(3),
        lambda: run([*ENVCTL, "enter", str(r), "--", "true"]),
        lambda: run([*ENVCTL, "enter", str(a), "--", "true"]),
    )


def _write_data(root: Path, size: int, file_size: int = 1 << 20) -> None:
    """`size` bytes of incompressible data in files of `file_size`, last changed an hour ago
    (a data set that sits unchanged between runs)."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(file_size)
    an_hour_ago = time.time() - 3600
    for i in range(size // file_size):
        path = root / f"part-{i:05d}.bin"
        path.write_bytes(block[i % file_size :] + block[: i % file_size])
        os.utime(path, (an_hour_ago, an_hour_ago))


def bench_runs_data(mode: Mode) -> Case:
    """A second run over unchanged declared data (1 GiB; smoke: 16 MiB): `enter -- true` until
    its record is complete (`runs P -n 1` waits for the hashes), against the same project with
    no `data:`. The issue's target: the data adds <= 50 ms to a run."""
    size = (16 << 20) if mode.smoke else (1 << 30)
    runs = "runs:\n  outputs: [out/]\n  metrics: [metrics.json]\n"
    with_data = project("bench-data", "default", runs + "  data: [data/]\n")
    without = project("bench-nodata", "default", runs)
    for path in (with_data, without):
        (path / "out").mkdir(exist_ok=True)
        envctl("build", str(path))
    _write_data(with_data / "data", size)

    def run_and_record(path: Path) -> None:
        run([*ENVCTL, "enter", str(path), "--", "true"])
        run([*ENVCTL, "--json", "runs", path.name, "-n", "1"])

    first = timed(lambda: run_and_record(with_data))  # hashes every byte once
    run_and_record(without)
    case = interleave(
        Case(
            f"second run, {size >> 20} MiB of data",
            f"enter + record, runs: data ({size >> 20} MiB unchanged)",
            "enter + record, no data:",
        ),
        mode.times(5),
        lambda: run_and_record(with_data),
        lambda: run_and_record(without),
    )
    recorded = json.loads(envctl("--json", "runs", with_data.name, "-n", "1"))["runs"][0]
    if len(recorded["data"]) != size >> 20:
        raise SystemExit(f"bench: the run recorded {len(recorded['data'])} data files")
    added = (statistics.median(case.a) - statistics.median(case.b)) * 1000
    # What the daemon does for the data on a second run, without the enter around it.
    sys.path.insert(0, str(ROOT))
    from envd.gateways.hashcache import HashCache

    with HashCache(WORK / "bench-hashes.db") as cache:
        cache.snapshot(with_data, ["data/"])
        check = [timed(lambda: cache.snapshot(with_data, ["data/"])) for _ in range(mode.times(5))]
    case.note = (
        f"{size >> 20} files of 1 MiB; the data adds {added:.0f} ms to a run, median against "
        f"median (target <= 50 ms); the unchanged data's snapshot itself takes "
        f"{statistics.median(check) * 1000:.1f} ms; the first run, which hashed it all, "
        f"took {first:.1f} s"
    )
    return case


def bench_build(mode: Mode) -> list[Case]:
    sk = project("bench-sk", mode.template)
    envctl("lock", str(sk))
    envctl("build", str(sk))
    ctx = export(sk, WORK / "ctx-noop")
    docker_build(ctx, "envd-bench/noop:1")  # prime the engine's cache
    noop = interleave(
        Case(
            "no-op build", "envctl build (unchanged)", "docker build (full cache)", target="<= 1.0"
        ),
        mode.times(2),
        lambda: envctl("build", str(sk)),
        lambda: docker_build(ctx, "envd-bench/noop:1"),
    )
    # The same no-op over gRPC (the click command, as any build with work to do): what the
    # enter socket's build-check saves.
    over_grpc = {**ENV, "ENVD_ENTER_FAST": "0"}
    grpc_times = [
        timed(lambda: run([*ENVCTL, "build", str(sk)], env=over_grpc)) for _ in range(mode.times(2))
    ]
    noop.note = (
        "answered on the daemon's enter socket (build-check); the same no-op over gRPC "
        f"(ENVD_ENTER_FAST=0): median {statistics.median(grpc_times):.3f} s"
    )
    rebuild = Case(
        "rebuild +1 package",
        "envctl build after adding a package",
        "docker build of the exported Dockerfile",
        target="<= 0.3",
    )
    base_text = (sk / "envd.yaml").read_text()
    for i, extra in enumerate(["six", "idna", "certifi", "packaging", "tomli"][: mode.times(1)]):
        (sk / "envd.yaml").write_text(add_package(base_text, extra))
        envctl("lock", str(sk))
        ctx_i = export(sk, WORK / f"ctx-re{i}")
        rebuild.a.append(timed(lambda: envctl("build", str(sk))))
        rebuild.b.append(timed(lambda c=ctx_i: docker_build(c, "envd-bench/rebuild:1")))
        (sk / "envd.yaml").write_text(base_text)
        envctl("lock", str(sk))
    cold = Case(
        f"cold build ({mode.template})",
        "envctl build, empty caches",
        "docker build with pip, --no-cache",
        target="<= 0.5",
    )
    for _ in range(mode.reps if mode.full else 1):
        cold.a.append(timed(lambda: _cold_envd_build(sk)))
        cold.b.append(timed(lambda: docker_build(ctx, "envd-bench/cold:1", no_cache=True)))
    return [noop, rebuild, cold]


def bench_content(mode: Mode) -> list[Case]:
    """The environment's content hash, read from the image's layers: first (no cache) against
    `docker save` of the same image (the engine handing out the same bytes), and cached."""
    sys.path.insert(0, str(ROOT))
    from envd.gateways.engine import Engine
    from envd.services.content import ContentHasher

    image = image_of(WORK / "bench-sk")
    engine = Engine()
    cache = WORK / "content-cache"

    def fresh() -> None:
        shutil.rmtree(cache, ignore_errors=True)
        ContentHasher(engine, cache).content_hash(image)

    def save() -> None:
        with open(os.devnull, "wb") as sink:
            subprocess.run(["docker", "save", image], stdout=sink, check=True)

    first = interleave(
        Case("content hash, first", "envd content hash (no cache)", "docker save", target="<= 1.2"),
        mode.times(1),
        fresh,
        save,
    )
    warm = ContentHasher(engine, cache)
    warm.content_hash(image)
    again = ContentHasher(engine, cache)  # a new daemon: only the files on disk are cached
    cached = [timed(lambda: again.content_hash(image)) for _ in range(mode.times(3))]
    files = len(warm.image_manifest(image).entries)
    first.note = (
        f"{files} files; cached: median {statistics.median(cached) * 1000:.1f} ms (target <= 50 ms)"
    )
    return [first]


def _cold_envd_build(path: Path) -> None:
    """Drop this project's image and every step layer nobody else holds, and the uv cache."""
    images = json.loads(envctl("--json", "images"))["images"]
    for image in images:
        if image["project"] in ("", path.name):
            run(["docker", "rmi", "-f", image["image"]], check=False)
    run(["docker", "volume", "rm", "-f", "envd-uv-cache"], check=False)
    envctl("gc")
    envctl("build", str(path))


def bench_lock(mode: Mode) -> list[Case]:
    sk = project("bench-lock", mode.template)
    reqs = WORK / "requirements.in"
    reqs.write_text("numpy>=1.26\npyyaml\n" if mode.smoke else "scikit-learn\npandas\n")
    pip_compile = str(Path(sys.executable).with_name("pip-compile"))
    uv_cache = WORK / "cache" / "uv"
    pip_cache = WORK / "pip-cache"

    def envd_lock(*flags: str) -> None:
        (sk / "envd.lock").unlink(missing_ok=True)
        envctl("lock", *flags, str(sk))

    def compile_hashes() -> None:
        # pip's HTTP cache and pip-tools' dependency cache both live under pip_cache.
        env = {**ENV, "XDG_CACHE_HOME": str(pip_cache)}
        argv = [pip_compile, "--quiet", "--generate-hashes", "--cache-dir", str(pip_cache / "pip")]
        run([*argv, "--output-file", str(WORK / "requirements.txt"), str(reqs)], env=env)

    cold = interleave(
        Case("lock, cold cache", "envctl lock --upgrade", "pip-compile --generate-hashes"),
        1,
        # --upgrade: uv is asked afresh (a remembered resolution would make it a warm lock).
        lambda: envd_lock("--upgrade"),
        compile_hashes,
        before_a=lambda: shutil.rmtree(uv_cache, ignore_errors=True),
        before_b=lambda: shutil.rmtree(pip_cache, ignore_errors=True),
    )
    warm = interleave(
        Case("lock, warm cache", "envctl lock", "pip-compile --generate-hashes", target="<= 0.3"),
        mode.times(1),
        envd_lock,
        compile_hashes,
    )
    return [cold, warm]


def bench_share(mode: Mode) -> list[Case]:
    sys.path.insert(0, str(ROOT))
    from tests.integration.registry import local_registry

    a = WORK / "bench-a"
    if not a.exists():  # `--only share`: the enter cases did not build it
        a = project("bench-a", "default")
        envctl("build", str(a))
    root = WORK / "registry"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with local_registry(root) as address:
        image = image_of(a)
        envctl("share", "image", str(a), "--to", f"{address}/bench/a:1")
        run(["docker", "tag", image, f"{address}/bench/plain:1"])
        run(["docker", "push", f"{address}/bench/plain:1"])
        case = interleave(
            Case(
                "share (unchanged image)", "envctl share image --to", "docker push", target="<= 1.5"
            ),
            mode.times(1),
            lambda: envctl("share", "image", str(a), "--to", f"{address}/bench/a:1"),
            lambda: run(["docker", "push", f"{address}/bench/plain:1"]),
        )
        moved = json.loads(
            envctl("--json", "share", "image", str(a), "--to", f"{address}/bench/a:1")
        )["result"]["layers_pushed"]
        start = [timed(lambda: envctl("ps")) for _ in range(mode.times(1))]
        case.note = (
            f"layers moved by a second share: {moved}; envctl's start and one call to the "
            f"daemon (`envctl ps`): median {statistics.median(start):.3f} s"
        )
    return [case]


def bench_team_cache(mode: Mode) -> list[Case]:
    """A colleague's first build of the template: a new envd home on an empty engine (the
    second, "remote" engine when this machine can start one), from the team build cache that
    the bench home filled, against the same first build without the cache. Each run gets a
    fresh engine and a fresh home with its own, empty envd cache ($ENVD_HOME/cache, as a
    colleague's machine has): the cold build makes the Debian base (mmdebstrap) and downloads
    every wheel; the cached one pulls, and hashes what it pulled."""
    sys.path.insert(0, str(ROOT))
    from tests.integration.registry import local_registry
    from tests.integration.remote_engine import RemoteEngineUnavailable, remote_engine

    sk = WORK / "bench-sk"
    root = WORK / "team-registry"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    case = Case(
        f"team cache ({mode.template})",
        "second home, empty engine, from the cache",
        "second home, empty engine, cold build",
        target="<= 0.3",
    )
    with local_registry(root) as address:
        repository = f"{address}/bench/cache"
        envctl("config", "cache", repository)
        try:
            # Untagged, the image is built again from its cached steps (nothing runs), and
            # that build pushes every step.
            run(["docker", "rmi", image_of(sk)])
            envctl("build", str(sk))
        finally:
            envctl("config", "cache", "")

        # (not under /tmp, which the second engine cannot see: a cold build mounts files)
        team = Path(tempfile.mkdtemp(prefix="envd-bench-team-", dir="/var/tmp"))

        def colleague(n: int, cached: bool) -> None:
            home = team / f"home-{n}"
            # (smoke: the bench's own cache, so `make check` makes no second Debian base)
            cache = WORK / "cache" if mode.smoke else team / f"home-{n}" / "cache"
            checkout = team / f"sk-{n}"
            checkout.mkdir()
            for name in ("envd.yaml", "envd.lock"):
                shutil.copyfile(sk / name, checkout / name)
            try:
                with remote_engine() as host:
                    _team_build(home, cache, checkout, host, repository if cached else "")
            except RemoteEngineUnavailable:
                _team_build(home, cache, checkout, "", repository if cached else "")

        try:
            for n in range(mode.times(1)):
                case.a.append(_team_time(lambda n=n: colleague(2 * n, True)))
                case.b.append(_team_time(lambda n=n: colleague(2 * n + 1, False)))
        finally:
            shutil.rmtree(team, ignore_errors=True)
    case.note = "time of `envctl build` alone (the engine's and the daemon's start excluded)"
    return [case]


_TEAM_TIMES: list[float] = []


def _team_time(action: Callable[[], None]) -> float:
    _TEAM_TIMES.clear()
    action()
    return _TEAM_TIMES[-1]


def _team_build(home: Path, cache: Path, project_dir: Path, host: str, repository: str) -> None:
    env = {
        **ENV,
        "ENVD_HOME": str(home),
        "ENVD_SOCKET": str(home / "envd.sock"),
        "ENVD_CACHE": str(cache),
    }
    if host:
        env["DOCKER_HOST"] = host
    try:
        run([*ENVCTL, "config", "cache", repository], env=env)  # (starts the daemon)
        _TEAM_TIMES.append(timed(lambda: run([*ENVCTL, "build", str(project_dir)], env=env)))
    finally:
        run([*ENVCTL, "daemon", "stop"], env=env, check=False)


def bench_startup(mode: Mode) -> tuple[list[Case], dict[str, float]]:
    """`envctl --help` and `envctl ps` as users start them (byte code compiled, as `pip install`
    leaves it), and the daemon's memory: idle after the other cases, and with 20 projects."""
    help_case = Case("envctl --help", "envctl --help", "python -c pass", target="<= 2.5")
    ps_case = Case("envctl ps", "envctl ps", "docker ps", target="<= 3")
    for folder in ("cli", "envd"):
        compileall.compile_dir(ROOT / folder, quiet=1)
    interleave(
        help_case,
        mode.times(3),
        lambda: run([*ENVCTL, "--help"]),
        lambda: run([sys.executable, "-c", "pass"]),
    )
    interleave(ps_case, mode.times(3), lambda: run([*ENVCTL, "ps"]), lambda: run(["docker", "ps"]))
    rows = len(json.loads(envctl("--json", "ps"))["containers"])
    ps_case.note = f"{rows} warm containers listed"
    pid = int((WORK / "home" / "envd.pid").read_text())
    facts = {"daemon_rss_mib_idle": _rss(pid)}
    count = 2 if mode.smoke else 20
    for i in range(count):
        p = project(f"watched-{i:02d}", "default")
        envctl("add", str(p))
    time.sleep(0.2 if mode.smoke else 2)
    facts[f"daemon_rss_mib_{count}_projects"] = _rss(pid)
    # What it is made of: anonymous memory (heap, Python's arenas) and mapped files (libraries).
    facts[f"daemon_rss_anon_mib_{count}_projects"] = _rss(pid, "RssAnon:")
    facts[f"daemon_rss_file_mib_{count}_projects"] = _rss(pid, "RssFile:")
    facts[f"daemon_cpu_percent_idle_{count}_projects"] = _cpu_percent(
        pid, 1.0 if mode.smoke else 20.0
    )
    facts["load_average_1min"] = round(os.getloadavg()[0], 2)
    return [help_case, ps_case], facts


def bench_startup_alone(mode: Mode) -> tuple[list[Case], dict[str, float]]:
    """`--only startup`: one warm container for `ps` to list, then the startup cases."""
    a = project("bench-a", "default")
    envctl("build", str(a))
    envctl("enter", str(a), "--", "true")
    return bench_startup(mode)


def _rss(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _cpu_percent(pid: int, seconds: float) -> float:
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks(pid)
    time.sleep(seconds)
    return round(100.0 * (_cpu_ticks(pid) - before) / hz / seconds, 2)


# ---------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    engine = run(["docker", "version", "-f", "{{.Server.Version}}"]).stdout.strip()
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cores": str(os.cpu_count()),
        "memory": f"{int(mem) / 1024 / 1024:.1f} GiB",
        "engine": f"Docker {engine}",
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_report(cases: list[Case], facts: dict[str, float], full: bool) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    data = {
        "machine": info,
        "mode": "full" if full else "quick",
        "facts": facts,
        "cases": [{**asdict(c), "ratio": c.ratio} for c in cases],
    }
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    chart = ROOT / "bench" / "ratios.png"
    _chart([c for c in cases if c.a and c.b], chart)
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench{'-full' if full else ''}` on {info['date']}: {info['cores']} "
        f"cores, {info['memory']}, {info['engine']}, kernel {info['kernel']}.",
        "A and B runs are interleaved; times are medians (min-max) in seconds; the ratio is "
        "A/B, so below 1 means envd is faster. Targets come from the issues.",
        "",
        "| case | A (envd) | B (baseline) | A median | B median | ratio A/B | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.a_label} | {c.b_label} | {_spread(c.a)} | {_spread(c.b)} | "
            f"{c.ratio:.2f} | {c.target or '-'} | {c.met() or '-'} |"
        )
    lines += ["", "Daemon facts:", ""]
    lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in facts.items()]
    notes = [f"- {c.name}: {c.note}" for c in cases if c.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", "![ratios](bench/ratios.png)", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def _chart(cases: list[Case], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(cases) + 1.2))
    names = [c.name for c in cases][::-1]
    ratios = [c.ratio for c in cases][::-1]
    colors = ["#2a9d8f" if r <= 1 else "#e76f51" for r in ratios]
    ax.barh(names, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("envd time / baseline time (log scale; < 1 is faster)")
    for y, r in enumerate(ratios):
        ax.text(r, y, f" {r:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cleanup(tags: bool = True) -> None:
    run([*ENVCTL, "stop", "--all"], check=False)
    run([*ENVCTL, "daemon", "stop"], check=False)
    # Containers, then images (a parent goes once its children have: a few rounds), then the
    # uv-cache volumes the bench's homes made (a background rebuild may have made one late).
    for kind, verb in (
        ("ps -aq", "rm -f"),
        *[("images -q", "rmi -f")] * 4,
        ("volume ls -q", "volume rm -f"),
    ):
        ids = run(["docker", *kind.split(), "--filter", f"label={LABEL}"], check=False).stdout
        if ids.split():
            run(["docker", *verb.split(), *sorted(set(ids.split()))], check=False)
    for tag in ("noop", "rebuild", "cold") if tags else ():  # the build cases' tags
        run(["docker", "rmi", "-f", f"envd-bench/{tag}:1"], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--full", action="store_true", help="more repetitions (slower)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every case once, on the small template, no report (what `make check` runs)",
    )
    parser.add_argument(
        "--only",
        choices=[
            "enter",
            "remote",
            "engines",
            "podman",
            "startup",
            "runs",
            "build",
            "lock",
            "share",
        ],
        help="only these cases (enter: warm and cold enter, swap, pipes, runs:; remote: enter "
        "on a second engine; engines: warm enter against the engine's own exec and no-op "
        "build, on each engine of the matrix (Docker 26 classic and containerd store, Podman "
        "rootful and rootless); podman: those on the Podman rows only; startup: "
        "--help, ps and the daemon's memory; runs: share and pull a run against DVC, runs "
        "--from; build: no-op, +1 package and cold builds, and the content hash; lock: cold "
        "and warm `envctl lock`; share: re-share of an unchanged image), printed, no report",
    )
    args = parser.parse_args(argv)
    mode = Mode(reps=10 if args.full else 3, full=args.full, smoke=args.smoke)
    shutil.rmtree(WORK / "home", ignore_errors=True)
    for name in os.listdir(WORK) if WORK.exists() else []:
        if name not in ("cache", "dvc-venv"):
            shutil.rmtree(WORK / name, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    phases: list[str] = []

    def phase(name: str, since: float) -> None:
        phases.append(f"{name} {time.monotonic() - since:.0f}s")

    try:
        if args.only == "startup":
            t = time.monotonic()
            cases, facts = bench_startup_alone(mode)
            phase("startup", t)
            for key, value in facts.items():
                print(f"fact  {key.replace('_', ' ')}: {value}")
            return _print(cases, started, phases, "startup cases")
        if args.only == "remote":
            t = time.monotonic()
            cases = bench_remote(mode)
            phase("remote", t)
            return _print(cases, started, phases, "remote cases")
        if args.only in ("engines", "podman"):
            t = time.monotonic()
            kinds = ENGINE_ROWS if args.only == "engines" else ("podman", "podman-rootless")
            cases = bench_engines(mode, kinds)
            phase(args.only, t)
            return _print(cases, started, phases, f"{args.only} cases")
        if args.only == "runs":
            from bench.runs import bench_runs

            t = time.monotonic()
            cases = bench_runs(mode)
            phase("runs", t)
            return _print(cases, started, phases, "runs cases")
        if args.only == "build":
            t = time.monotonic()
            cases = bench_build(mode)
            phase("build", t)
            t = time.monotonic()
            cases += bench_content(mode)
            phase("content", t)
            return _print(cases, started, phases, "build cases")
        if args.only in ("lock", "share"):
            t = time.monotonic()
            cases = bench_lock(mode) if args.only == "lock" else bench_share(mode)
            phase(args.only, t)
            return _print(cases, started, phases, f"{args.only} cases")
        t = time.monotonic()
        cases = bench_enter(mode)
        phase("enter", t)
        if args.only == "enter":
            return _print(cases, started, phases, "enter cases")
        t = time.monotonic()
        cases += bench_remote(mode)
        phase("remote", t)
        t = time.monotonic()
        cases += bench_build(mode)
        phase("build", t)
        t = time.monotonic()
        cases += bench_content(mode)
        phase("content", t)
        t = time.monotonic()
        cases += bench_lock(mode)
        phase("lock", t)
        t = time.monotonic()
        cases += bench_share(mode)
        phase("share", t)
        t = time.monotonic()
        from bench.runs import bench_runs

        cases += bench_runs(mode)
        phase("runs", t)
        t = time.monotonic()
        cases += bench_team_cache(mode)
        phase("team cache", t)
        t = time.monotonic()
        startup, facts = bench_startup(mode)
        phase("startup", t)
        cases += startup
    finally:
        t = time.monotonic()
        cleanup(tags=args.only in (None, "build"))
        phase("cleanup", t)
    missing = [c.name for c in cases if not c.a or not c.b]
    if missing:
        raise SystemExit(f"bench: no measurement for {', '.join(missing)}")
    if mode.smoke:
        return _print(cases, started, phases, "smoke")
    write_report(cases, facts, args.full)
    return 0


def _print(cases: list[Case], started: float, phases: list[str], what: str) -> int:
    for c in cases:
        met = f"  target {c.target}: {c.met()}" if c.target else ""
        print(f"ok  {c.name}: A {_spread(c.a)}  B {_spread(c.b)}  ratio {c.ratio:.2f}{met}")
        if c.note:
            print(f"    {c.note}")
    took = time.monotonic() - started
    print(f"bench {what}: {len(cases)} cases in {took:.0f}s ({', '.join(phases)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
