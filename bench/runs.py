"""Issue 26's benchmark: sharing a run against DVC on the same files.

- `envctl share run` of a run with declared data (1 GiB; smoke: 8 MiB) to Debian's
  docker-registry on 127.0.0.1, against `dvc push` of the same files to a local DVC remote
  (a folder); each repetition gets a fresh registry and a fresh remote. Dirty pages are
  written out (`sync`, untimed) before each timed step, so neither side pays for the
  writeback of what the other wrote. The environment image
  is pushed to the registry first, untimed: DVC moves no environment, and a team's registry
  has its images already (`share run` still asks the engine to push it: that is timed).
- `envctl pull run` into a fresh clone with a fresh envd home (its daemon started untimed; the
  image already in the engine, the bench's envd cache shared) against `dvc pull` into a fresh
  clone, which has a fresh DVC cache.
- A second share of the same run (its data unchanged) against the first.
- The registry's own floor: the same files PUT to a fresh repository of the same registry by
  `curl -T`, one at a time (docker-registry hashes and writes what it receives: no client
  sends faster than it takes them), given in the share case's note.
- `envctl runs --from` over 200 shared runs (smoke: 5) from a fresh home: the second listing
  against the first (target: the second <= 0.2 s).

DVC lives in the bench's own venv (WORK/dvc-venv), made once with uv and kept between runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.__main__ import (
    ENV,
    ENVCTL,
    ROOT,
    WORK,
    Case,
    Mode,
    envctl,
    hot_envctl,
    image_of,
    run,
    timed,
)

GIT = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "ENVD_USER": "bench",
}
DVC_VENV = WORK / "dvc-venv"
TEMPLATE_RATE = "learning_rate: 0.5"  # in the default template's params.yaml: each run varies it
# A run that reads params.yaml and writes an output and metrics, in well under a second.
QUICK_RUN = (
    "import json, pathlib, yaml\n"
    "lr = yaml.safe_load(open('params.yaml'))['model']['learning_rate']\n"
    "pathlib.Path('models').mkdir(exist_ok=True)\n"
    "json.dump({'learning_rate': lr}, open('models/model.json', 'w'))\n"
    "json.dump({'loss': round(1 / (1 + lr), 6)}, open('metrics.json', 'w'))\n"
)


def bench_runs(mode: Mode) -> list[Case]:
    sys.path.insert(0, str(ROOT))
    from tests.integration.registry import local_registry

    size = (8 << 20) if mode.smoke else (1 << 30)
    files = 8
    label = f"{size >> 20} MiB"
    dvc = _dvc()
    project, run_id = _project_with_data("benchshare", size, files)
    dvc_repo = _dvc_repo(dvc, project / "data")
    share = Case(
        f"share a run, {label} of data",
        "envctl share run (first, fresh registry)",
        "dvc push (fresh local remote)",
        target="<= 1.0",
    )
    pull = Case(
        f"pull a run, {label} of data",
        "envctl pull run (fresh clone, fresh home)",
        "dvc pull (fresh clone, fresh cache)",
        target="<= 1.0",
    )
    again = Case(
        f"share a run again, {label} unchanged",
        "envctl share run (second, same run)",
        "envctl share run (first)",
        target="<= 0.1",
    )
    uploaded: list[int] = []
    floor: list[float] = []
    floor_all: list[float] = []
    for n in range(mode.times(1)):
        root = WORK / f"run-registry-{n}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        remote = WORK / "dvc-remote"
        shutil.rmtree(remote, ignore_errors=True)
        try:
            with local_registry(root) as address:
                repo = f"{address}/bench/run"
                _push_image(project, repo)
                os.sync()
                share.a.append(timed(lambda r=repo: envctl("share", "run", run_id, "--to", r)))
                os.sync()
                share.b.append(timed(lambda: _dvc_run(dvc, dvc_repo, "push")))
                os.sync()
                floor.append(_curl_floor(address, project / "data"))
                os.sync()
                floor_all.append(_curl_floor(address, project / "data", at_once=True))
                os.sync()
                again.a.append(timed(lambda r=repo: envctl("share", "run", run_id, "--to", r)))
                second = json.loads(envctl("--json", "share", "run", run_id, "--to", repo))
                uploaded.append(int(second["result"]["files_uploaded"]))
                pull.a.append(_envd_pull(n, project, f"{repo}:{run_id}", files))
                pull.b.append(_dvc_pull(n, dvc, dvc_repo, files))
        finally:
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(remote, ignore_errors=True)
    again.b = list(share.a)
    share.note = (
        f"{files} files of {size // files >> 20} MiB of random bytes; the environment image "
        "was in the registry before (pushed untimed); the registry's floor (`curl -T` of the "
        f"same files, one at a time): median {statistics.median(floor):.2f} s; all at once: "
        f"median {statistics.median(floor_all):.2f} s"
    )
    pull.note = "the environment image was already in the engine; the envd cache is shared"
    again.note = f"files uploaded by a third share: {max(uploaded, default=0)} (expected: 0)"
    with local_registry(_fresh(WORK / "team-runs-registry")) as address:
        listing = _team_listing(mode, f"{address}/bench/team")
    shutil.rmtree(WORK / "team-runs-registry", ignore_errors=True)
    return [share, pull, again, listing]


# ---------------------------------------------------------------------- envd


def _project_with_data(name: str, size: int, files: int) -> tuple[Path, str]:
    """A default-template project (`envctl new`, committed, locked, built) with `size` bytes
    of random data in `files` files under data/, and one recorded run over it (the model the
    template trains, so the run has an output). Returns the project and the run's id."""
    path = WORK / name
    envctl("new", name, "--template", "default", "--dir", str(path))
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "start")
    envctl("lock", str(path))
    envctl("build", str(path))
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "pin the environment")
    data = path / "data"
    data.mkdir(exist_ok=True)
    each = size // files
    for i in range(files):
        with open(data / f"part-{i}.bin", "wb") as out:
            for _ in range(each // (1 << 20)):
                out.write(os.urandom(1 << 20))
    envctl("enter", str(path), "--", "python", "-m", f"{name}.train")
    record = json.loads(envctl("--json", "runs", name, "-n", "1"))["runs"][0]
    recorded = [name for name in record["data"] if name.startswith("data/part-")]
    if len(recorded) != files:
        raise SystemExit(f"bench: the run recorded {len(recorded)} of the {files} data files")
    return path, str(record["id"])


def _push_image(project: Path, repo: str) -> None:
    image = image_of(project)
    run(["docker", "tag", image, f"{repo}:prepushed"])
    try:
        run(["docker", "push", f"{repo}:prepushed"])
    finally:
        run(["docker", "rmi", f"{repo}:prepushed"], check=False)


@contextmanager
def _home(name: str) -> Iterator[dict[str, str]]:
    """A fresh envd home (a colleague's), its daemon started before anything is timed."""
    home = _fresh(WORK / name)
    env = {**ENV, **GIT, "ENVD_HOME": str(home), "ENVD_SOCKET": str(home / "envd.sock")}
    try:
        run([*ENVCTL, "ps"], env=env)  # (starts the daemon)
        yield env
    finally:
        run([*ENVCTL, "daemon", "stop"], env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _envd_pull(n: int, project: Path, reference: str, files: int) -> float:
    clone = _clone(project, WORK / f"envd-clone-{n}")
    try:
        with _home(f"home-b-{n}") as env:
            os.sync()
            took = timed(lambda: run([*ENVCTL, "pull", "run", reference, str(clone)], env=env))
        placed = sorted(p.name for p in (clone / "data").glob("part-*.bin"))
        if len(placed) != files:
            raise SystemExit(f"bench: `envctl pull run` placed {len(placed)} data files")
        return took
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def _team_listing(mode: Mode, repo: str) -> Case:
    """`runs` (quick ones, each with another learning rate) shared to `repo`, listed from a
    fresh home: the first listing reads every record, the second only what is new."""
    count = 5 if mode.smoke else 200
    path = WORK / "benchteam"
    envctl("new", "benchteam", "--template", "default", "--dir", str(path))
    envctl("lock", str(path))
    envctl("build", str(path))
    params = path / "params.yaml"
    text = params.read_text()
    if TEMPLATE_RATE not in text:
        raise SystemExit(f"bench: {params} has no `{TEMPLATE_RATE}` for the runs to vary")
    hot = hot_envctl()
    started = time.monotonic()
    for i in range(count):
        rate = f"learning_rate: {0.001 * (i + 1):.3f}"
        params.write_text(text.replace(TEMPLATE_RATE, rate))
        _checked([*hot, "enter", str(path), "--", "python", "-c", QUICK_RUN])
    made = time.monotonic() - started
    records = json.loads(envctl("--json", "runs", "benchteam", "-n", str(count)))["runs"]
    started = time.monotonic()
    for record in records:
        _checked([*hot, "share", "run", record["id"], "--to", repo])
    shared = time.monotonic() - started
    listing = [*hot, "runs", "--from", repo, "-n", str(count)]
    floor: list[float] = []  # any envctl command that asks the daemon: `envctl ps`
    case = Case(
        f"runs --from, {count} shared runs",
        "second listing (cached)",
        "first listing (fresh home)",
    )
    for n in range(mode.times(1)):
        with _home(f"home-list-{n}") as env:
            case.b.append(timed(lambda e=env: run(listing, env=e)))
            case.a.append(timed(lambda e=env: run(listing, env=e)))
            floor.append(timed(lambda e=env: run([*hot, "ps"], env=e)))
            shown = run(listing, env=env).stdout
            if sum(record["id"][:12] in shown for record in records) != count:
                raise SystemExit(f"bench: `runs --from` did not list all {count} runs")
    case.note = (
        f"second listing: median {statistics.median(case.a):.3f} s (target <= 0.2 s); "
        f"`envctl ps` in the same home (envctl's start and one call to the daemon): median "
        f"{statistics.median(floor):.3f} s; making the {count} runs took {made:.0f} s, "
        f"sharing them {shared:.0f} s"
    )
    return case


def _curl_floor(address: str, data: Path, *, at_once: bool = False) -> float:
    """Seconds for `curl -T` to PUT each data file to a fresh repository of the registry (an
    upload started untimed, its digest known): what the registry takes, without envd. One at
    a time, or (`at_once`) one curl per file, all started together."""
    commands: list[list[str]] = []
    repository = "bench/floor-all" if at_once else "bench/floor"
    for part in sorted(data.glob("part-*.bin")):
        digest = "sha256:" + hashlib.sha256(part.read_bytes()).hexdigest()
        started = urllib.request.urlopen(
            urllib.request.Request(
                f"http://{address}/v2/{repository}/blobs/uploads/", method="POST"
            )
        )
        location = urllib.parse.urljoin(f"http://{address}/", started.headers["Location"])
        url = f"{location}{'&' if '?' in location else '?'}digest={digest}"
        put = ["curl", "-sSf", "-o", "/dev/null", "-H", "Content-Type: application/octet-stream"]
        commands.append([*put, "-T", str(part), url])
    if not at_once:
        return sum(timed(functools.partial(run, argv)) for argv in commands)

    def all_at_once() -> None:
        procs = [subprocess.Popen(argv) for argv in commands]
        if any(proc.wait() != 0 for proc in procs):
            raise SystemExit("curl could not upload to the bench's registry")

    return timed(all_at_once)


# ---------------------------------------------------------------------- DVC


def _dvc() -> Path:
    """dvc in the bench's own venv, installed once (uv) and kept between bench runs."""
    binary = DVC_VENV / "bin" / "dvc"
    if not binary.is_file():
        uv = str(Path(sys.executable).with_name("uv"))
        run([uv, "venv", "-q", "--python", sys.executable, str(DVC_VENV)])
        run([uv, "pip", "install", "-q", "dvc"], env={**ENV, "VIRTUAL_ENV": str(DVC_VENV)})
    return binary


def _dvc_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **GIT, "DVC_NO_ANALYTICS": "1"}


def _dvc_run(dvc: Path, repo: Path, *args: str) -> None:
    subprocess.run(
        [str(dvc), *args, "-q"], cwd=repo, env=_dvc_env(), check=True, capture_output=True
    )


def _dvc_repo(dvc: Path, data: Path) -> Path:
    """A git repository with the same data files under DVC (`dvc add`, which hashes them,
    untimed, as envd's run did), its remote a folder."""
    repo = _fresh(WORK / "dvcproj")
    _git(repo, "init", "-q")
    _dvc_run(dvc, repo, "init")
    (repo / "data").mkdir()
    for part in sorted(data.glob("part-*.bin")):
        shutil.copyfile(part, repo / "data" / part.name)
    _dvc_run(dvc, repo, "remote", "add", "-d", "bench", str(WORK / "dvc-remote"))
    _dvc_run(dvc, repo, "add", "data")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "data under dvc")
    return repo


def _dvc_pull(n: int, dvc: Path, repo: Path, files: int) -> float:
    clone = _clone(repo, WORK / f"dvc-clone-{n}")
    try:
        os.sync()
        took = timed(lambda: _dvc_run(dvc, clone, "pull"))
        placed = sorted(p.name for p in (clone / "data").glob("part-*.bin"))
        if len(placed) != files:
            raise SystemExit(f"bench: `dvc pull` placed {len(placed)} data files")
        return took
    finally:
        shutil.rmtree(clone, ignore_errors=True)


# ---------------------------------------------------------------------- helpers


def _checked(argv: list[str]) -> None:
    proc = run(argv, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:3])} failed (exit {proc.returncode}):\n{proc.stderr}")


def _git(cwd: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", *args], cwd=cwd, env={**env, **GIT}, check=True, capture_output=True)


def _clone(source: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    _git(source, "clone", "-q", str(source), str(dest))
    return dest


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
