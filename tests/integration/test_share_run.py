"""Issue 26, sharing a run, on the real engine and Debian's docker-registry on 127.0.0.1.

Two envd homes, two users: A (alice) makes a project from the default template, runs it
twice with different params and shares both runs; B (bob), with an empty store, pulls one
into a clone, reruns it and gets identical outputs, and lists the team's runs with
`runs --from`. The registry writes an access log, so the test counts the uploads it received.
One environment image is built for the whole module (home A's); B pulls it by digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, stop_daemon
from tests.integration.registry import local_registry

pytestmark = pytest.mark.integration

GIT = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


@dataclass
class Registry:
    address: str
    root: Path

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")

    def puts(self) -> list[str]:
        """The request lines of every PUT the registry answered, in order."""
        return re.findall(r'"PUT (\S+) HTTP/1\.1"', self.log())

    def blob_path(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return (
            self.root / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
        )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with its access log on: the tests count its requests."""
    root = tmp_path_factory.mktemp("registry")
    with local_registry(root, access_log=True) as address:
        yield Registry(address, root)


def git(cwd: Path, *argv: str) -> str:
    return subprocess.run(
        ["git", *argv],
        cwd=cwd,
        env={**_git_env(), **GIT},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def _git_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


@dataclass
class Team:
    alice: Envctl
    bob: Envctl
    project: Path  # alice's
    repo: str  # REGISTRY/REPO
    runs: list[str]  # alice's two run ids, in order
    refs: list[str]  # what `share run` printed for each
    checkout: Path  # bob's clone of alice's repository


@pytest.fixture(scope="module")
def team(
    shared: Envctl, registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Team]:
    alice = shared
    alice.env.update(GIT, ENVD_USER="alice")
    alice.ok("new", "sharedproj", "--template", "default", "--dir", str(alice.cwd / "sharedproj"))
    project = alice.cwd / "sharedproj"
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "start")
    alice.ok("lock", str(project))
    alice.ok("build", str(project))  # the build records the environment hash in envd.lock
    git(project, "add", "-A")
    git(project, "commit", "-qm", "pin the environment")
    alice.ok("enter", "sharedproj", "--", "python", "-m", "sharedproj.train")
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate: 0.5", "learning_rate: 0.1"))
    alice.ok("enter", "sharedproj", "--", "python", "-m", "sharedproj.train")
    runs = json.loads(alice.ok("--json", "runs", "sharedproj"))["runs"]
    ids = [r["id"] for r in sorted(runs, key=lambda r: r["started_at"])]
    assert len(ids) == 2
    repo = f"{registry.address}/team/sharedproj"
    # Run 1's model was overwritten by run 2: it is shared from envd's kept copy.
    refs = [alice.ok("share", "run", run_id, "--to", repo).strip() for run_id in ids]

    root = tmp_path_factory.mktemp("bob")
    home = root / "home"
    home.mkdir()
    bob = Envctl(env={**_envctl_env(home), **GIT, "ENVD_USER": "bob"}, home=home, cwd=root)
    checkout = root / "checkout"
    subprocess.run(["git", "clone", "-q", str(project), str(checkout)], check=True)
    try:
        yield Team(alice, bob, project, repo, ids, refs, checkout)
    finally:
        bob("stop", "--all", timeout=60)
        stop_daemon(bob)


def test_a_pulled_run_reruns_with_identical_outputs(team: Team) -> None:
    bob = team.bob
    assert team.refs == [f"{team.repo}:{run_id}" for run_id in team.runs]
    checkout = team.checkout

    pulled = bob.ok("pull", "run", team.refs[0], str(checkout))

    assert f"imported run {team.runs[0]}" in pulled
    assert "the checkout is at the run's commit" in pulled
    assert (checkout / "data" / "dataset.csv").is_file()
    assert (checkout / "models" / "model.json").is_file()
    shown = json.loads(bob.ok("--json", "runs", "show", team.runs[0]))
    assert shown["imported"] and shown["origin"] == team.refs[0]
    # Imported: its command is someone else's, so not without --yes (issue 24).
    refused = bob("rerun", team.runs[0])
    assert refused.returncode != 0
    again = bob("rerun", team.runs[0], "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reproduced: 1 of 1 outputs identical" in again.stdout

    # Other params here: the output that differs is named, and what else differed.
    params = checkout / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate: 0.5", "learning_rate: 0.9"))
    changed = bob("rerun", team.runs[0], "--yes", "--force")
    git(checkout, "checkout", "--", "params.yaml")
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "not reproduced: 0 of 1 outputs identical" in changed.stdout
    assert "models/model.json" in changed.stdout
    assert "also differs: code" in changed.stdout


def test_runs_from_the_registry_show_both_runs_and_the_param_that_varies(team: Team) -> None:
    listing = team.bob.ok("runs", "--from", team.repo)

    assert "model.learning_rate" in listing
    assert "0.5" in listing and "0.1" in listing
    assert "alice" in listing
    for run_id in team.runs:
        assert run_id[:12] in listing
    first = json.loads(team.bob.ok("--json", "runs", "--from", team.repo))
    second = json.loads(team.bob.ok("--json", "runs", "--from", team.repo))
    assert {r["run"]["id"] for r in second["runs"]} == set(team.runs)
    assert second["manifests_read"] == 0  # all from the cache, by digest
    assert len(first["runs"]) == 2
    only = json.loads(
        team.bob.ok("--json", "runs", "--from", team.repo, "--where", "model.learning_rate=0.1")
    )
    assert [r["run"]["id"] for r in only["runs"]] == [team.runs[1]]


def test_a_local_run_diffs_against_a_shared_one_and_the_report_reads_the_registry(
    team: Team,
) -> None:
    diff = team.alice("runs", "diff", team.runs[0], team.refs[1])
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "model.learning_rate" in diff.stdout

    page = team.bob.cwd / "team.html"
    team.bob.ok("runs", "report", "--from", team.repo, "-o", str(page))
    html = page.read_text()
    assert all(run_id in html for run_id in team.runs)


def test_a_second_share_uploads_no_data_blob(team: Team, registry: Registry) -> None:
    run = json.loads(team.alice.ok("--json", "runs", "show", team.runs[0]))
    data_digest = run["data"]["data/dataset.csv"]  # its hex: the query has sha256%3A<hex>
    before = len(registry.puts())
    assert any(data_digest in put for put in registry.puts()), "the first share sent the data"

    out = team.alice("share", "run", team.runs[0], "--to", team.repo)

    assert out.returncode == 0, out.stderr
    assert "0 uploaded" in out.stderr
    assert not [put for put in registry.puts()[before:] if data_digest in put]


def test_another_repository_of_the_registry_mounts_the_blobs(
    team: Team, registry: Registry
) -> None:
    run = json.loads(team.alice.ok("--json", "runs", "show", team.runs[0]))
    data_digest = run["data"]["data/dataset.csv"]
    before = len(registry.puts())

    out = team.alice("share", "run", team.runs[0], "--to", f"{registry.address}/team/other")

    assert out.returncode == 0, out.stderr
    assert "mounted" in out.stderr
    assert not [put for put in registry.puts()[before:] if data_digest in put]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.parts
    }


def test_a_changed_blob_is_refused_and_nothing_is_written(team: Team, registry: Registry) -> None:
    run = json.loads(team.alice.ok("--json", "runs", "show", team.runs[1]))
    output = "sha256:" + run["outputs"]["models/model.json"]
    blob = registry.blob_path(output)
    original = blob.read_bytes()
    changed = bytearray(original)
    changed[-2] ^= 1  # the same size: only the digest tells
    checkout = team.checkout
    before = snapshot(checkout)
    blob.write_bytes(bytes(changed))
    try:
        # --force: without the digest check, run 2's files would replace run 1's here
        out = team.bob("pull", "run", team.refs[1], str(checkout), "--force")
    finally:
        blob.write_bytes(original)

    assert out.returncode == 9, out.stdout + out.stderr
    assert "models/model.json" in out.stderr and "does not match" in out.stderr
    assert snapshot(checkout) == before


def test_the_configured_user_is_who_shared(team: Team, registry: Registry) -> None:
    alice = team.alice
    alice.ok("config", "user", "Alice Liddell")
    saved = alice.env.pop("ENVD_USER")
    try:
        alice.ok("share", "run", team.runs[1], "--to", f"{registry.address}/team/who")
    finally:
        alice.env["ENVD_USER"] = saved
        alice.ok("config", "user", "")

    listing = json.loads(team.bob.ok("--json", "runs", "--from", f"{registry.address}/team/who"))

    assert [r["shared_by"] for r in listing["runs"]] == ["Alice Liddell"]
    team.bob.env["COLUMNS"] = "300"  # the table cuts long cells to fit the terminal
    try:
        table = team.bob.ok("runs", "--from", f"{registry.address}/team/who")
    finally:
        del team.bob.env["COLUMNS"]
    assert "Alice Liddell" in table


def test_gc_removes_kept_files_no_run_names_and_keeps_the_rest(team: Team) -> None:
    alice = team.alice
    run = json.loads(alice.ok("--json", "runs", "show", team.runs[0]))
    model = run["outputs"]["models/model.json"]  # overwritten by run 2: only the kept copy has it
    store = alice.home / "runfiles" / "sha256"
    assert (store / model).is_file()
    orphan = store / hashlib.sha256(b"no run names these bytes").hexdigest()
    orphan.write_bytes(b"no run names these bytes")
    os.utime(orphan, (1_000_000, 1_000_000))  # kept long ago

    out = alice.ok("gc", "--keep-storage", "100000GB")  # a budget no image needs removing for

    assert f"removed runfiles/sha256/{orphan.name} (run file" in out
    assert "and 1 kept run files" in out
    assert not orphan.exists()
    assert (store / model).is_file()
    shared = alice("share", "run", team.runs[0], "--to", f"{team.repo}-after-gc")
    assert shared.returncode == 0, shared.stderr
