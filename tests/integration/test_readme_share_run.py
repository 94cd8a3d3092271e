"""The README's "Sharing a run", run as written, command by command: one envd home shares two
runs to Debian's docker-registry on 127.0.0.1; a second home, in a clone of the repository,
pulls one, reruns it and reads the team's runs.

Substituted, and only these: `localhost:5000` becomes the test registry's 127.0.0.1:PORT; the
run IDs the README shows become the IDs of the runs this flow recorded, in order of first
appearance; `envctl` is `python -m cli.main`. The colleague's commands (after "A colleague")
run in a `git clone` of the first user's project, with an envd home of their own. A command
line the test does not know fails it.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, stop_daemon
from tests.integration.registry import local_registry
from tests.integration.test_readme import README, Line, check
from tests.integration.test_readme_runs import commands, quoted

pytestmark = pytest.mark.integration

SECTION = "Sharing a run"
RUN_ID = re.compile(r"\b[0-9a-f]{12}\b")
GIT = {
    "GIT_AUTHOR_NAME": "alice",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "alice",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
}


@dataclass
class Person:
    runner: Envctl
    cwd: Path

    def envctl(self, line: Line, argv: list[str], code: int = 0) -> str:
        runner = Envctl(env=self.runner.env, home=self.runner.home, cwd=self.cwd)
        return check(runner(*argv, timeout=900), line, code)


@dataclass
class Walk:
    registry: str
    alice: Person
    bob: Person
    ids: dict[str, str] = field(default_factory=dict)  # README's run ID -> this flow's

    def substitute(self, argv: list[str]) -> list[str]:
        out = []
        for arg in argv:
            arg = arg.replace("localhost:5000", self.registry)
            out.append(RUN_ID.sub(lambda m: self.run_id(m.group(0)), arg))
        return out

    def run_id(self, shown: str) -> str:
        if shown not in self.ids:
            import json

            runs = json.loads(self.alice.runner.ok("--json", "runs", str(self.alice.cwd)))
            recorded = [r["id"][:12] for r in sorted(runs["runs"], key=lambda r: r["started_at"])]
            fresh = [r for r in recorded if r not in self.ids.values()]
            assert fresh, f"the README names run {shown}, but no further run was recorded"
            self.ids[shown] = fresh[0]
        return self.ids[shown]


def person(root: Path) -> Person:
    home = root / "home"
    home.mkdir(parents=True)
    runner = Envctl(env={**_envctl_env(home), **GIT}, home=home, cwd=root)
    return Person(runner, root)


@pytest.fixture
def walk(tmp_path: Path, engine: None) -> Iterator[Walk]:
    registry_root = tmp_path / "registry"
    registry_root.mkdir()
    alice, bob = person(tmp_path / "alice"), person(tmp_path / "bob")
    bob.runner.env.update(ENVD_USER="bob")
    with local_registry(registry_root) as address:
        try:
            yield Walk(address, alice, bob)
        finally:
            for who in (alice, bob):
                who.runner("stop", "--all", timeout=60)
                stop_daemon(who.runner)


def colleague_starts_at() -> int:
    for number, text in enumerate(README.read_text().splitlines(), 1):
        if text.startswith("A colleague, in a clone of the repository"):
            return number
    raise AssertionError("the README's sharing section has no colleague's part")


def shell(who: Person, line: Line, command: str) -> None:
    proc = subprocess.run(
        command, shell=True, cwd=who.cwd, env=who.runner.env, capture_output=True, text=True
    )
    check(proc, line)


def test_the_readme_run_sharing_works_as_written(walk: Walk) -> None:
    lines = commands(SECTION)
    boundary = colleague_starts_at()
    assert any(line.number > boundary for line in lines), "no colleague's commands"
    for line in lines:
        who = walk.alice if line.number < boundary else walk.bob
        if who is walk.bob and who.cwd == walk.bob.runner.cwd:  # their clone, made once
            clone = who.cwd / "churn"
            subprocess.run(["git", "clone", "-q", str(walk.alice.cwd), str(clone)], check=True)
            who.cwd = clone
        argv = list(line.argv)
        if argv[0] == "cd":
            who.cwd = who.cwd / argv[1]
            shell(who, line, line.text.split("&&", 1)[1].split("  # ")[0])
            continue
        if argv[0] in ("git", "sed"):
            shell(who, line, line.text.split("  # ")[0])
            continue
        assert argv[0] == "envctl", f"{line}: the README test does not know this command"
        argv = walk.substitute(argv[1:])
        verb = argv[0]
        if verb == "new":
            out = who.envctl(line, argv)
            assert (who.cwd / argv[1] / "envd.yaml").is_file(), out
        elif verb == "build":
            who.envctl(line, argv)
            assert '"environment_hash": "sha256:' in (who.cwd / "envd.lock").read_text()
        elif verb == "enter":
            who.envctl(line, argv)
            assert (who.cwd / "models" / "model.json").is_file(), line
        elif verb == "share":
            out = who.envctl(line, argv)
            assert out.strip() == f"{argv[-1]}:{argv[2]}", out
        elif verb == "runs" and argv[1] == "--from":
            out = who.envctl(line, argv)
            assert all(run_id in out for run_id in walk.ids.values()), out
            assert "model.learning_rate" in out, out
        elif verb == "pull":
            out = who.envctl(line, argv)
            for expected in quoted(line.comment):
                assert expected in out, f"{line}: no {expected!r} in\n{out}"
            assert (who.cwd / "models" / "model.json").is_file(), out
        elif verb == "rerun":
            out = who.envctl(line, argv)
            for expected in quoted(line.comment):
                assert expected in out, f"{line}: no {expected!r} in\n{out}"
        elif verb == "runs" and argv[1] == "diff":
            out = who.envctl(line, argv, code=1)  # like diff(1): they differ
            for expected in quoted(line.comment):
                assert expected in out, f"{line}: no {expected!r} in\n{out}"
        elif verb == "runs" and argv[1] == "report":
            who.envctl(line, argv)
            page = (who.cwd / argv[-1]).read_text()
            assert all(run_id in page for run_id in walk.ids.values())
        else:
            raise AssertionError(f"{line}: the README test does not know `envctl {verb}`")
    assert len(walk.ids) == 2, walk.ids
