"""The README's "A short tour" and "Sharing an environment", command by command, in order.

The commands are read from README.md itself, so editing the README changes this test. Each one
runs for real: a daemon with its own $ENVD_HOME ("you"), a second one for the colleague (own
home, own git checkout), the real engine and Debian's docker-registry on 127.0.0.1.

Substituted, and only these:
- `--template sklearn` becomes `--template default`: sklearn and pandas cost minutes to download
  and install; the default template (numpy, PyYAML) goes through exactly the same steps.
- `localhost:5000` becomes the test registry's 127.0.0.1:PORT, and the `@sha256:...` the README
  elides becomes the digest `share` printed.
- `train.py` (the user's own script) is written by the test and committed before the tour, and
  `your.fingerprint.json` is written by "you" with `envctl fingerprint --output`, as the
  colleague would receive it.
- `envctl` is `python -m cli.main` (what `.venv/bin/envctl` runs), so `. .venv/bin/activate` only
  has to exist.
A command line the test does not know fails it: a new README command needs a check here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Envctl, _envctl_env, stop_daemon
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
TRAIN_EXIT = 3  # train.py's exit status: `enter -- CMD` must hand it back
TRAIN_PY = (
    f"import sys, numpy\nprint('trained with numpy', numpy.__version__)\nsys.exit({TRAIN_EXIT})\n"
)


@dataclass(frozen=True)
class Line:
    """One command line of a README code block: argv, its comment, who runs it."""

    number: int  # README line number, for failure messages
    text: str
    argv: tuple[str, ...]
    comment: str
    actor: str  # "you" or "colleague"

    def __str__(self) -> str:
        return f"README.md:{self.number}: {self.text}"


def section(name: str) -> list[tuple[int, str]]:
    """The indented (code) lines of `## name`, with their line numbers."""
    lines = README.read_text().splitlines()
    start = lines.index(f"## {name}")
    out = []
    for number, line in enumerate(lines[start + 1 :], start + 2):
        if line.startswith("## "):
            break
        if line.startswith("    ") and line.strip():
            out.append((number, line[4:].rstrip()))
    assert out, f"README.md has no commands under `## {name}`"
    return out


def readme_lines(name: str) -> list[Line]:
    result = []
    actor = "you"
    for number, text in section(name):
        if text.startswith("#"):
            if "colleague" in text:  # "# a colleague, on another machine, ..."
                actor = "colleague"
            continue
        parts = re.split(r"\s+#\s", text, maxsplit=1)
        command, comment = parts[0], (parts[1] if len(parts) > 1 else "")
        result.append(Line(number, text, tuple(shlex.split(command)), comment.strip(), actor))
    return result


def test_readme_parsing_finds_the_tour_and_the_sharing_flow() -> None:
    tour = readme_lines("A short tour")
    share = readme_lines("Sharing an environment")
    assert tour[0].argv[0] == "." and any(line.argv[:2] == ("envctl", "init") for line in tour)
    assert [line.actor for line in share][-1] == "colleague"
    assert all(line.argv for line in tour + share)


@dataclass
class Flow:
    you: Envctl
    colleague: Envctl
    registry: str
    workspace: Path  # your git repository; churn/ is in it
    checkout: Path  # the colleague's clone
    reference: str = ""  # the last `share` printed


@pytest.fixture
def flow(tmp_path: Path, engine: None) -> Iterator[Flow]:
    workspace, checkout = tmp_path / "you", tmp_path / "colleague"
    homes = tmp_path / "home-you", tmp_path / "home-colleague"
    for folder in (workspace, checkout, *homes):
        folder.mkdir()  # the checkout stays empty until the README's `git commit` is cloned
    you = Envctl(env=_envctl_env(homes[0]), home=homes[0], cwd=workspace)
    colleague = Envctl(env=_envctl_env(homes[1]), home=homes[1], cwd=checkout)
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    git.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    you.env.update(git)
    (workspace / "churn").mkdir()
    (workspace / "churn" / "train.py").write_text(TRAIN_PY)
    for argv in (["init", "-q"], ["add", "churn/train.py"], ["commit", "-qm", "train.py"]):
        subprocess.run(["git", *argv], cwd=workspace, env=you.env, check=True)
    registry_root = tmp_path / "registry"
    registry_root.mkdir()
    with local_registry(registry_root) as address:
        try:
            yield Flow(you, colleague, address, workspace, checkout)
        finally:
            for runner in (you, colleague):
                runner("stop", "--all", timeout=60)
                stop_daemon(runner)


def substitute(line: Line, flow: Flow) -> list[str]:
    argv = list(line.argv[1:])
    out = []
    for i, arg in enumerate(argv):
        if arg == "sklearn" and i > 0 and argv[i - 1] == "--template":
            arg = "default"  # see the module's docstring
        if arg.endswith("@sha256:..."):
            assert flow.reference, f"{line}: nothing was shared before"
            assert (
                arg.split("@")[0].replace("localhost:5000", flow.registry)
                == (flow.reference.split("@")[0])
            )
            arg = flow.reference
        out.append(arg.replace("localhost:5000", flow.registry))
    return out


def check(proc: subprocess.CompletedProcess[str], line: Line, code: int = 0) -> str:
    assert proc.returncode == code, (
        f"{line}\nexited {proc.returncode}, expected {code}\n"
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, f"{line}\n{proc.stderr}"
    return proc.stdout


def run_line(line: Line, flow: Flow) -> None:
    if line.argv[0] == ".":
        assert (ROOT / line.argv[1]).is_file(), f"{line}: {line.argv[1]} does not exist"
        return
    if line.argv[0] == "git":
        proc = subprocess.run(
            line.text.split(" #")[0], shell=True, cwd=flow.workspace, env=flow.you.env,
            capture_output=True, text=True,
        )  # fmt: skip
        check(proc, line)
        subprocess.run(["git", "clone", "-q", str(flow.workspace), str(flow.checkout)], check=True)
        return
    assert line.argv[0] == "envctl", f"{line}: the README test does not know this command"
    runner = flow.you if line.actor == "you" else flow.colleague
    argv = substitute(line, flow)
    verb = argv[0]
    project_dir = runner.cwd / "churn"
    if verb == "init" and "--list" in argv:
        out = check(runner(*argv), line)
        named = line.comment.split(":", 1)[1] if ":" in line.comment else ""
        for template in filter(None, (t.strip() for t in named.split(","))):
            assert template in out, f"{line}: template {template} is not listed\n{out}"
    elif verb == "init":
        out = check(runner(*argv), line)
        assert "registered project `churn`" in out, f"{line}\n{out}"
        assert (project_dir / "envd.yaml").is_file()
    elif verb == "lock" and "--check" in argv:
        check(runner(*argv), line)  # just locked: current
        spec = project_dir / "envd.yaml"
        text = spec.read_text()
        spec.write_text(text.replace("PYTHONHASHSEED", "EXTRA: '1'\n  PYTHONHASHSEED", 1))
        try:
            proc = runner(*argv)
            check(proc, line, code=5)  # "exit 5, naming the reason, when envd.yaml moved on"
            assert proc.stderr.strip() or proc.stdout.strip(), f"{line}: no reason named"
        finally:
            spec.write_text(text)
        check(runner(*argv), line)
    elif verb == "lock":
        check(runner(*argv), line)
        assert (project_dir / "envd.lock").is_file(), f"{line}: no envd.lock"
    elif verb == "build":
        out = check(runner(*argv), line)
        assert "metadata" in out, f"{line}: the plan names no steps\n{out}"
    elif verb == "enter" and "--" not in argv:
        proc = runner(*argv, input="echo in-$ENVD_PROJECT; pwd; exit 0\n")
        out = check(proc, line)
        assert "in-churn" in out and "/workspace" in out, f"{line}\n{out}"
    elif verb == "enter":
        proc = runner(*argv)
        out = check(proc, line, code=TRAIN_EXIT)  # "its exit status is envctl's"
        assert "trained with numpy" in out, f"{line}\n{out}"
        if "pulls the pinned digest" in line.comment:
            assert "pulling" in proc.stderr and "running: " not in proc.stderr, proc.stderr
    elif verb == "ps":
        assert "churn" in check(runner(*argv), line)
    elif verb == "fingerprint":
        out = check(runner(*argv), line)
        written = runner.cwd / argv[argv.index("--output") + 1]
        assert "wrote" in out and json.loads(written.read_text()), f"{line}\n{out}"
    elif verb == "diff":
        if argv[-1] == "your.fingerprint.json":  # what "you" sent the colleague
            flow.you.ok("fingerprint", "churn", "--output", str(runner.cwd / argv[-1]))
        out = check(runner(*argv), line)  # exit 1 when anything differs
        for expected in re.findall(r'"([^"]+)"', line.comment):
            assert expected in out, f"{line}: no {expected!r} in\n{out}"
    elif verb == "runs":
        out = check(runner(*argv), line)
        row = next((r for r in out.splitlines() if "python train.py" in r), "")
        assert re.search(rf"\s{TRAIN_EXIT}\s", row), f"{line}: no run of train.py\n{out}"
    elif verb == "share":
        out = check(runner(*argv), line)
        target = argv[argv.index("--to") + 1]
        match = re.search(rf"{re.escape(target)}@sha256:[0-9a-f]{{64}}", out)
        assert match, f"{line}: no digest reference in\n{out}"
        flow.reference = match.group(0)
        if "--pin" in argv:
            lock = json.loads((project_dir / "envd.lock").read_text())
            assert lock["shared_image"] == flow.reference, f"{line}: not pinned"
    elif verb == "pull":
        assert "verified" in check(runner(*argv), line)
    elif verb == "info":
        assert "engine" in check(runner(*argv), line).lower()
    elif verb == "events":
        events_stream(runner, argv, line)
    else:
        raise AssertionError(f"{line}: the README test does not know `envctl {verb}`")


def events_stream(runner: Envctl, argv: list[str], line: Line) -> None:
    """`envctl events` streams until interrupted: it must show `envctl stop churn` happen."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *argv],
        env=runner.env,
        cwd=runner.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    stream = proc.stdout
    reader = threading.Thread(target=lambda: seen.extend(iter(stream.readline, "")))
    reader.start()
    try:
        time.sleep(1.5)  # subscribed by then
        runner.ok("stop", "churn")
        deadline = time.monotonic() + 20
        while not any("churn" in s for s in seen) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()
    assert any("churn" in s for s in seen), f"{line}: no event shown\n{''.join(seen)}"


def test_the_readme_tour_and_sharing_work_as_written(flow: Flow) -> None:
    started = time.monotonic()
    lines = readme_lines("A short tour") + readme_lines("Sharing an environment")
    done = []
    for line in lines:
        run_line(line, flow)
        done.append(line.text)
    assert os.path.isdir(flow.checkout / "churn"), "the colleague's checkout was never made"
    assert any("share image" in text for text in done) and any("pull" in t for t in done)
    print(f"README flow: {len(done)} commands in {time.monotonic() - started:.0f}s")
