"""From a result back to what produced it: runs with a `runs:` section, on the real engine.

One daemon for the module; the projects are small copies of the `default` template's project
(pure Python, PyYAML), made with `envctl new`, so every run takes about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.model.provenance import check_statement
from tests.conftest import Envctl, _envctl_env, stop_daemon

pytestmark = pytest.mark.integration

GIT = ("git", "-c", "user.email=t@example.com", "-c", "user.name=t")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def runs_json(envctl: Envctl, project: str, *extra: str) -> list[dict[str, object]]:
    reply = json.loads(envctl.ok("--json", "runs", project, *extra))
    return list(reply.get("runs", []))


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, engine: None) -> Iterator[Envctl]:
    root = tmp_path_factory.mktemp("runs")
    home = root / "home"
    home.mkdir()
    envctl = Envctl(env=_envctl_env(home), home=home, cwd=root)
    yield envctl
    envctl("stop", "--all", timeout=60)
    stop_daemon(envctl)


@pytest.fixture(scope="module")
def demo(runner: Envctl) -> Path:
    """`envctl new demo_runs --template default`, smaller, committed, locked."""
    out = runner.ok("new", "demo_runs", "--template", "default")
    assert "demo_runs.train" in out  # the next steps name the package
    path = runner.cwd / "demo_runs"
    params = path / "params.yaml"
    params.write_text(
        params.read_text()
        .replace("samples: 400", "samples: 120")
        .replace("epochs: 200", "epochs: 30")
    )
    runner.ok("lock", str(path))
    runner.ok("build", str(path))  # may record the environment hash in envd.lock
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


@pytest.fixture(scope="module")
def two_runs(runner: Envctl, demo: Path) -> tuple[str, str]:
    """Two runs of train, the second with another learning rate (a committed change)."""
    runner.ok("enter", "demo_runs", "--", "python", "-m", "demo_runs.train")
    params = demo / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate: 0.5", "learning_rate: 0.05"))
    git(demo, "commit", "-qam", "slower")
    runner.ok("enter", "demo_runs", "--", "python", "-m", "demo_runs.train")
    runs = runs_json(runner, "demo_runs")
    assert len(runs) == 2
    second, first = str(runs[0]["id"]), str(runs[1]["id"])
    return first, second


def test_trace_names_the_second_run_with_params_data_and_commit(
    runner: Envctl, demo: Path, two_runs: tuple[str, str]
) -> None:
    first, second = two_runs
    model = demo / "models" / "model.json"
    out = runner.ok("trace", str(model))
    assert f"written by run {second}" in out
    assert "model.learning_rate = 0.05" in out
    data_hash = sha256(demo / "data" / "dataset.csv")
    assert f"data/dataset.csv  {data_hash[:12]}" in out
    assert git(demo, "rev-parse", "HEAD")[:12] in out
    shown = json.loads(runner.ok("--json", "runs", "show", second))
    assert shown["outputs"] == {"models/model.json": sha256(model)}
    assert shown["data"] == {"data/dataset.csv": data_hash}
    assert "params.yaml" in shown["params"] and "0.05" in shown["params"]["params.yaml"]
    assert shown["metrics"]["train.accuracy"] > 0.5
    assert shown["git_commit"] == git(demo, "rev-parse", "HEAD")
    # The first run's model was overwritten: its bytes are nobody's output now.
    other = runner.cwd / "stray.json"
    other.write_text("{}\n")
    missing = runner("trace", str(other))
    assert missing.returncode == 4, missing.stderr
    assert first != second


def test_runs_table_diff_where_and_sort(
    runner: Envctl, demo: Path, two_runs: tuple[str, str]
) -> None:
    first, second = two_runs
    table = runner.ok("runs", "demo_runs")
    header = table.splitlines()[0]
    assert "model.learning_rate" in header and "seed" not in header  # only what varies
    diff = runner("runs", "diff", first, second)
    assert diff.returncode == 1
    assert "param model.learning_rate: 0.5 -> 0.05" in diff.stdout
    assert "metric train.log_loss:" in diff.stdout
    assert "code commit:" in diff.stdout
    only = runs_json(runner, "demo_runs", "--where", "model.learning_rate=0.05")
    assert [r["id"] for r in only] == [second]
    ordered = runs_json(runner, "demo_runs", "--sort", "-train.log_loss")
    losses = [float(r["metrics"]["train.log_loss"]) for r in ordered]  # type: ignore[index]
    assert losses == sorted(losses, reverse=True)
    assert {r["id"] for r in runs_json(runner, "demo_runs", "--status", "failed")} == set()


def test_rerun_reproduces_then_refuses_after_data_changed(
    runner: Envctl, demo: Path, two_runs: tuple[str, str]
) -> None:
    _, second = two_runs
    again = runner("rerun", second)
    assert again.returncode == 0, again.stderr
    assert "reproduced: 1 of 1 outputs identical" in again.stdout
    dataset = demo / "data" / "dataset.csv"
    original = dataset.read_bytes()
    try:
        dataset.write_bytes(original + b"0.1,0.2,0.3,0.4,1\n")
        refused = runner("rerun", second)
        assert refused.returncode != 0
        assert "data data/dataset.csv" in refused.stderr
        forced = runner("rerun", second, "--force")  # the model differs: not reproduced
        assert forced.returncode == 1, forced.stderr
        assert "not reproduced: 0 of 1" in forced.stdout
        assert "models/model.json" in forced.stdout
    finally:
        dataset.write_bytes(original)
    runner.ok("rerun", second)  # the data back as it was: identical again


def test_export_checks_and_imports_into_another_home(
    runner: Envctl, demo: Path, two_runs: tuple[str, str], tmp_path: Path
) -> None:
    _, second = two_runs
    runner.ok("rerun", second)  # the model on disk is the second run's bytes again
    model = demo / "models" / "model.json"
    statement = tmp_path / "statement.json"
    runner.ok("runs", "export", second, "-o", str(statement))
    text = statement.read_text()
    check = check_statement(text, "models/model.json", sha256(model))
    assert check.ok and check.name_matches, check.errors
    raw = json.loads(text)
    assert raw["subject"] == [{"name": "models/model.json", "digest": {"sha256": sha256(model)}}]
    assert runner.ok("trace", str(model), "--provenance", str(statement)).startswith("ok:")
    model_copy = tmp_path / "model.json"
    model_copy.write_bytes(model.read_bytes() + b" ")
    assert runner("trace", str(model_copy), "--provenance", str(statement)).returncode == 9

    home = tmp_path / "home2"
    home.mkdir()
    colleague = Envctl(env=_envctl_env(home), home=home, cwd=tmp_path)
    try:
        assert colleague("trace", str(model)).returncode == 4
        assert "imported run" in colleague.ok("runs", "import", str(statement))
        out = colleague.ok("trace", str(model))
        assert f"written by run {second}" in out
        assert "model.learning_rate = 0.05" in out
    finally:
        stop_daemon(colleague)


def test_new_project_run_is_traceable_and_its_tests_pass(runner: Envctl) -> None:
    out = runner.ok("new", "fresh-model", "--template", "default")
    path = runner.cwd / "fresh-model"
    assert (path / "fresh_model" / "train.py").is_file()
    assert "python -m fresh_model.train" in out
    assert "name: fresh-model" in (path / "envd.yaml").read_text()
    params = path / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 200", "epochs: 20"))
    runner.ok("enter", "fresh-model", "--", "python", "-m", "fresh_model.train")
    traced = runner.ok("trace", str(path / "models" / "model.json"))
    assert "python -m fresh_model.train" in traced
    tests = runner(
        "enter", "fresh-model", "--", "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout


def test_without_a_runs_section_nothing_extra_is_recorded(runner: Envctl, tmp_path: Path) -> None:
    path = runner.cwd / "plain"
    path.mkdir()
    (path / "envd.yaml").write_text(
        "version: 1\nname: plain-runs\nbase:\n  debian: bookworm\npython: '3.11'\n"
        "packages: [pyyaml]\n"
    )
    runner.ok("enter", str(path), "--", "sh", "-c", "mkdir -p models && echo x > models/m.txt")
    run = runs_json(runner, "plain-runs")[0]
    shown = json.loads(runner.ok("--json", "runs", "show", str(run["id"])))
    assert shown["outputs"] == {} and shown["params"] == {} and shown["data"] == {}
    assert runner("trace", str(path / "models" / "m.txt")).returncode == 4
    assert not os.path.exists(path / "metrics.json")


def test_rerun_runs_in_the_directory_the_run_ran_in(
    runner: Envctl, demo: Path, two_runs: tuple[str, str]
) -> None:
    from dataclasses import replace

    sub = demo / "notebooks"  # empty: git does not see it, the tree stays clean
    sub.mkdir()
    inside = replace(runner, cwd=sub)
    write_cwd = "import os; open('../models/cwd.txt', 'w').write(os.getcwd() + '\\n')"
    inside.ok("enter", "demo_runs", "--", "python", "-c", write_cwd)
    run = runs_json(runner, "demo_runs")[0]
    assert (demo / "models" / "cwd.txt").read_text() == "/workspace/notebooks\n"
    shown = json.loads(runner.ok("--json", "runs", "show", str(run["id"])))
    assert shown["workdir"] == "notebooks"
    assert "directory    notebooks (in the project)" in runner.ok("runs", "show", str(run["id"]))

    (demo / "models" / "cwd.txt").write_text("elsewhere\n")
    again = runner("rerun", str(run["id"]))  # from outside the project
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reproduced: 1 of 1 outputs identical" in again.stdout
    assert (demo / "models" / "cwd.txt").read_text() == "/workspace/notebooks\n"
    newest = runs_json(runner, "demo_runs")[0]
    assert newest["id"] != run["id"] and newest["workdir"] == "notebooks"

    sub.rmdir()
    gone = runner("rerun", str(run["id"]))
    assert gone.returncode == 4, gone.stdout + gone.stderr
    assert "ran in notebooks/ of demo_runs" in gone.stderr
    assert runs_json(runner, "demo_runs")[0]["id"] == newest["id"]  # nothing ran
