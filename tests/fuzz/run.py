"""Run the fuzz targets with atheris (coverage-guided libFuzzer for Python).

    python -m tests.fuzz.run [--seconds N | --runs N] [TARGET ...]

Every `tests/fuzz/fuzz_<name>.py` defines `target(data: bytes) -> None`, which feeds the bytes
to one parser. An `envd.errors.EnvdError` is an expected refusal; any other exception, a
per-input timeout or the memory limit is a crash. Each target runs in its own subprocess, with
envd's modules instrumented for coverage; its seed corpus is `tests/fuzz/corpus/<name>/` (read,
never written: new inputs go to `tests/fuzz/work/<name>/`), and crash inputs are written to
`tests/fuzz/crashes/<name>/` (both gitignored). One line per target: executions, exec/s,
seconds, crashes. The exit status is 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "corpus"
WORK = HERE / "work"
CRASHES = HERE / "crashes"
TIMEOUT_S = 10  # per input; a parser of at most a few MiB that takes longer is a hang
RSS_LIMIT_MB = 2048
_ARTIFACT = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))


def _child(name: str, seconds: int | None, runs: int | None) -> None:
    """In the subprocess: instrument envd, then hand the target to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["envd"]):
        module = importlib.import_module(f"tests.fuzz.fuzz_{name}")
        from envd.errors import EnvdError

    target = module.target

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except EnvdError:
            pass  # a refusal: what the parser should do with bad input

    work = WORK / name
    crashes = CRASHES / name
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
    ]
    args.append(f"-runs={runs}" if runs is not None else f"-max_total_time={seconds}")
    args.append(str(work))  # libFuzzer adds new inputs to the first folder only
    if (CORPUS / name).is_dir():
        args.append(str(CORPUS / name))
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def _stat(output: str, key: str) -> int:
    found = re.findall(rf"stat::{key}:\s*(\d+)", output)
    return int(found[-1]) if found else 0


def _artifacts(name: str) -> set[Path]:
    folder = CRASHES / name
    if not folder.is_dir():
        return set()
    return {p for p in folder.iterdir() if p.name.startswith(_ARTIFACT)}


def run_one(name: str, seconds: int | None, runs: int | None) -> bool:
    """Fuzz one target in a subprocess; True when it found no crash."""
    before = _artifacts(name)
    command = [sys.executable, "-m", "tests.fuzz.run", "--child", name]
    command += ["--runs", str(runs)] if runs is not None else ["--seconds", str(seconds)]
    log = CRASHES / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    output = log.read_text(errors="replace")
    executions = _stat(output, "number_of_executed_units")
    new = sorted(_artifacts(name) - before)
    crashed = proc.returncode != 0 or bool(new)
    rate = executions / elapsed if elapsed else 0.0
    print(
        f"{name}: {executions} executions, {rate:.0f} exec/s, {elapsed:.0f} s, "
        f"{len(new) or int(crashed)} crashes",
        flush=True,
    )
    if crashed:
        for path in new:
            print(f"  input: {path.relative_to(REPO)}")
        tail = "\n".join(output.splitlines()[-40:])
        print(f"  exit status {proc.returncode}; the end of {log.relative_to(REPO)}:\n{tail}")
    return not crashed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=int, help="time per target (default 60)")
    budget.add_argument("--runs", type=int, help="inputs per target instead of a time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: every target")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None or args.runs is not None else 60
    if args.child:
        _child(args.child, seconds, args.runs)
        return 0
    known = discover()
    targets = [t.removeprefix("fuzz_").removesuffix(".py") for t in args.targets] or known
    unknown = [t for t in targets if t not in known]
    if unknown:
        parser.error(f"no target {', '.join(unknown)} (targets: {', '.join(known)})")
    failed = [t for t in targets if not run_one(t, seconds, args.runs)]
    if failed:
        print(f"crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
