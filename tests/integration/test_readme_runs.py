"""The README's "Where did this model come from?" and "Existing projects, and exports", run as
written, command by command (the tour and sharing flow are in test_readme.py).

Substituted, and only these: the run IDs the README shows (`81b89ffa9bfb`, ...) become the IDs
of the runs this flow recorded, in order of first appearance; `envctl` is `python -m cli.main`;
`uv pip install -r pylock.toml` installs into a fresh virtualenv of the lock's Python. Lines
that are YAML (`runs:` and its keys) or the output the README shows after `$ ` commands are
not commands. A command line the test does not know fails it.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, stop_daemon
from tests.integration.test_readme import README, Line, check, section

pytestmark = pytest.mark.integration

RUN_ID = re.compile(r"\b[0-9a-f]{12}\b")
YAML_KEY = re.compile(r"^[A-Za-z_]+:(\s|$)")


def blocks(name: str) -> list[list[tuple[int, str]]]:
    """The section's code blocks: runs of indented lines with only blank lines between."""
    numbered = section(name)
    lines = README.read_text().splitlines()
    out: list[list[tuple[int, str]]] = []
    for number, text in numbered:
        previous = out[-1][-1][0] if out else 0
        between = lines[previous : number - 1] if previous else ["x"]
        if out and all(not line.strip() for line in between):
            out[-1].append((number, text))
        else:
            out.append([(number, text)])
    return out


def commands(name: str) -> list[Line]:
    """The section's command lines; in a block with `$ ` lines, only those are commands (the
    rest is the output the README shows)."""
    out = []
    for block in blocks(name):
        shows_output = any(text.startswith("$ ") for _, text in block)
        for number, text in block:
            if shows_output:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            if YAML_KEY.match(text.strip()) or text.startswith("#"):
                continue
            command, _, comment = text.partition("  # ")
            out.append(Line(number, text, tuple(shlex.split(command)), comment.strip(), "you"))
    return out


@dataclass
class Walk:
    runner: Envctl
    cwd: Path
    env: dict[str, str]
    ids: dict[str, str] = field(default_factory=dict)  # README's run ID -> this flow's

    def run_ids(self) -> list[str]:
        out = self.runner.ok("--json", "runs", str(self.cwd))
        runs = json.loads(out)
        runs = runs.get("runs", runs) if isinstance(runs, dict) else runs
        return [r["id"][:12] for r in sorted(runs, key=lambda r: r["started_at"])]


@pytest.fixture
def walk(tmp_path: Path, engine: None) -> Iterator[Walk]:
    home = tmp_path / "home"
    home.mkdir()
    runner = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    git.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    runner.env.update(git)
    try:
        yield Walk(runner, tmp_path, runner.env)
    finally:
        runner("stop", "--all", timeout=60)
        stop_daemon(runner)


def envctl(walk: Walk, line: Line, argv: list[str], code: int = 0) -> str:
    runner = Envctl(env=walk.env, home=walk.runner.home, cwd=walk.cwd)
    return check(runner(*argv, timeout=900), line, code)


def substitute_ids(walk: Walk, argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        if RUN_ID.fullmatch(arg):
            if arg not in walk.ids:
                recorded = walk.run_ids()
                used = set(walk.ids.values())
                fresh = [r for r in recorded if r not in used]
                assert fresh, f"the README names run {arg}, but no further run was recorded"
                walk.ids[arg] = fresh[0]
            arg = walk.ids[arg]
        out.append(arg)
    return out


def quoted(comment: str) -> list[str]:
    return re.findall(r'"([^"]+)"', comment)


def test_the_readme_runs_flow_works_as_written(walk: Walk) -> None:
    lines = commands("Where did this model come from?")
    assert lines[0].argv[:2] == ("envctl", "new")
    other_home = walk.cwd / "home-colleague"
    other_home.mkdir()
    for line in lines:
        argv = list(line.argv)
        if argv[0] == "cd":
            walk.cwd = walk.cwd / argv[1]
            rest = line.text.split("&&", 1)[1].split("  # ")[0]
            proc = subprocess.run(
                rest, shell=True, cwd=walk.cwd, env=walk.env, capture_output=True, text=True
            )
            check(proc, line)
            continue
        if argv[0] == "sed":
            before = (walk.cwd / argv[-1]).read_text()
            proc = subprocess.run(argv, cwd=walk.cwd, capture_output=True, text=True)
            check(proc, line)
            assert (walk.cwd / argv[-1]).read_text() != before, f"{line}: changed nothing"
            continue
        assert argv[0] == "envctl", f"{line}: the README test does not know this command"
        argv = substitute_ids(walk, argv[1:])
        verb = argv[0]
        if verb == "new":
            out = envctl(walk, line, argv)
            assert "created" in out and (walk.cwd / argv[1] / "envd.yaml").is_file(), out
        elif verb == "enter":
            out = envctl(walk, line, argv)
            if "pytest" in argv:
                assert "passed" in out and "failed" not in out, f"{line}\n{out}"
            else:
                assert (walk.cwd / "models" / "model.json").is_file(), f"{line}\n{out}"
        elif verb == "runs" and argv[1] == "diff":
            out = envctl(walk, line, argv, code=1)  # like diff(1): they differ
            for expected in quoted(line.comment):
                assert expected in out, f"{line}: no {expected!r} in\n{out}"
        elif verb == "runs" and argv[1] == "export":
            envctl(walk, line, argv)
            statement = json.loads((walk.cwd / argv[-1]).read_text())
            assert statement["_type"] == "https://in-toto.io/Statement/v1", statement
        elif verb == "runs" and argv[1] == "import":
            imported = Envctl(env=_envctl_env(other_home), home=other_home, cwd=walk.cwd)
            try:
                check(imported(*argv), line)
                out = check(imported("trace", "models/model.json"), line)
                assert "written by run" in out, out
            finally:
                stop_daemon(imported)
        elif verb == "runs":
            out = envctl(walk, line, argv)
            first, second = walk.run_ids()[:2]  # learning rate 0.5, then 0.1
            assert second in out and first not in out, f"{line}: --where did not filter\n{out}"
        elif verb == "trace":
            out = envctl(walk, line, argv)
            for expected in quoted(line.comment):
                expected = substitute_ids(walk, expected.split())
                assert " ".join(expected) in out, f"{line}: no {expected!r} in\n{out}"
        elif verb == "rerun":
            out = envctl(walk, line, argv)
            for expected in quoted(line.comment):
                assert expected in out, f"{line}: no {expected!r} in\n{out}"
        else:
            raise AssertionError(f"{line}: the README test does not know `envctl {verb}`")
    assert len(walk.ids) == 2, walk.ids


def test_the_readme_adoption_and_exports_work_as_written(walk: Walk) -> None:
    lines = commands("Existing projects, and exports")
    churn = walk.cwd / "churn"
    (churn / "requirements").mkdir(parents=True)
    (churn / ".python-version").write_text("3.11\n")
    (churn / "requirements.txt").write_text("-r requirements/base.txt\n")
    (churn / "requirements" / "base.txt").write_text("pyyaml==6.0.2\n")
    (walk.cwd / "app").mkdir()
    (walk.cwd / "app" / "requirements.txt").write_text("pyyaml\n")
    for line in lines:
        argv = list(line.argv)
        if argv[:3] == ["uv", "pip", "install"]:
            venv = walk.cwd / "venv"
            uv = str(Path(sys.executable).parent / "uv")  # the activated .venv's
            subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
            env = {**walk.env, "VIRTUAL_ENV": str(venv)}
            proc = subprocess.run(
                [uv, *argv[1:-1], str(walk.cwd / argv[-1])], cwd=walk.cwd, env=env,
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            locked = json.loads((churn / "envd.lock").read_text())["target"]["python_version"]
            if locked != platform.python_version():
                # "for the lock's own Python": on another one uv must refuse, naming it
                check(proc, line, code=2)
                assert f"=={locked}" in proc.stderr, proc.stderr
                continue
            check(proc, line)
            freeze = subprocess.run(
                [uv, "pip", "freeze"], env=env, capture_output=True, text=True, check=True
            ).stdout
            assert "pyyaml==6.0.2" in freeze.lower(), freeze
            continue
        assert argv[0] == "envctl", f"{line}: the README test does not know this command"
        verb, args = argv[1], argv[2:]
        if verb == "init":
            out = envctl(walk, line, argv[1:])
            target = walk.cwd / args[-1]
            assert (target / "envd.yaml").is_file(), f"{line}\n{out}"
            if target == churn:
                shown = [t.strip() for _, t in section("Existing projects, and exports")]
                took = [t for t in shown if t.startswith("took ")]
                assert took, "the README shows no `took` lines"
                for expected in took:
                    assert expected in out, f"{line}: README shows {expected!r}, got\n{out}"
                envctl(walk, line, ["lock", "churn"])
                envctl(walk, line, ["build", "churn"])
        elif verb == "export":
            out = envctl(walk, line, argv[1:])
            kind = args[0]
            if "-o" in args:
                written = walk.cwd / args[args.index("-o") + 1]
            else:
                written = churn / ".devcontainer" / "devcontainer.json"
            assert written.is_file(), f"{line}: wrote nothing\n{out}"
            data = written.read_text()
            if kind == "pylock":
                assert "lock-version" in data and "sha256" in data, data[:500]
            elif kind == "sbom":
                assert json.loads(data)["bomFormat"] == "CycloneDX"
            else:
                assert json.loads(data)["image"], data
        else:
            raise AssertionError(f"{line}: the README test does not know `envctl {verb}`")


TEAM_TRAIN = (
    "import pathlib, numpy\n"
    "pathlib.Path('models').mkdir(exist_ok=True)\n"
    "pathlib.Path('models/model.txt').write_text(numpy.__version__)\n"
    "print('trained on the server')\n"
)


def test_the_readme_team_flow_works_as_written(walk: Walk, remote_docker_host: str) -> None:
    """`## Working with a team`: the engine is the second, empty dockerd (it sees none of these
    files), `registry.example.com/...` a local registry, `ssh://me@gpu-server` its tcp address,
    and churn/ the default template with a train.py that writes models/model.txt."""
    from tests.integration.registry import local_registry

    churn = walk.cwd / "churn"
    envctl(walk, commands("Working with a team")[0], ["init", "--template", "default", "churn/"])
    (churn / "train.py").write_text(TEAM_TRAIN)
    registry_root = walk.cwd / "registry"
    registry_root.mkdir()
    with local_registry(registry_root) as registry:
        for line in commands("Working with a team"):
            argv = [
                a.replace("ssh://me@gpu-server", remote_docker_host).replace(
                    "registry.example.com", registry
                )
                for a in line.argv
            ]
            if argv[0] == "export":
                key, value = argv[1].split("=", 1)
                walk.env[key] = value
                continue
            assert argv[0] == "envctl", f"{line}: the README test does not know this command"
            verb = argv[1]
            out = envctl(walk, line, argv[1:])
            if verb == "daemon":
                assert "stopped" in out or "not running" in out, f"{line}\n{out}"
            elif verb == "info":
                assert f"{remote_docker_host} (remote, DOCKER_HOST)" in out, f"{line}\n{out}"
            elif verb == "config":
                assert registry in envctl(walk, line, ["config"]), f"{line}: not set"
            elif verb == "build":
                # built on the second engine, pushed to the cache
                where = {**walk.env}
                images = subprocess.run(
                    ["docker", "images", "-q", "--filter", "label=envd.project=churn"],
                    env=where, capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                assert images.strip(), f"{line}: no image on {remote_docker_host}"
                tags = json.loads(
                    urllib.request.urlopen(
                        f"http://{registry}/v2/team/envd-cache/tags/list", timeout=10
                    ).read()
                )["tags"]
                assert tags, f"{line}: nothing pushed to the cache\n{out}"
            elif verb == "enter":
                assert "trained on the server" in out, f"{line}\n{out}"
                assert (churn / "models" / "model.txt").is_file(), f"{line}: nothing came back"
            else:
                raise AssertionError(f"{line}: the README test does not know `envctl {verb}`")
