"""Each `envctl new` template is a whole project whose own tests pass in its own environment.

For a template: `envctl new X --template T`, build, `envctl enter X -- python -m pytest` (the
project's tests, inside its image), `envctl enter X -- python -m X.train` (a recorded run), and
`envctl trace X/models/...` names that run. One daemon for the module; each image is built once.

Measured on 2 shared cores (build, tests, train, trace): sklearn (scikit-learn, pandas) a
~500 MB image, 60-110 s; jupyter (jupyterlab, pandas) ~490 MB, about 90 s. No other test builds
these (the bench builds environments/sklearn in its own home, and images are per home), so
nothing is shared but the session's uv cache: the wheels are downloaded once.

pytorch-cpu and pytorch-cuda are not built here: torch is a download of gigabytes and this
suite never installs it. Their projects' tests run where one may have torch: `envctl new X
--template pytorch-cpu`, then `envctl enter X -- python -m pytest`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl, _envctl_env, stop_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, engine: None) -> Iterator[Envctl]:
    root = tmp_path_factory.mktemp("templates")
    home = root / "home"
    home.mkdir()
    envctl = Envctl(env=_envctl_env(home), home=home, cwd=root)
    yield envctl
    envctl("stop", "--all", timeout=60)
    stop_daemon(envctl)


def new_and_build(runner: Envctl, name: str, template: str) -> Path:
    out = runner.ok("new", name, "--template", template)
    package = name.replace("-", "_")
    assert f"python -m {package}.train" in out
    path = runner.cwd / name
    assert (path / package / "train.py").is_file()
    assert f"name: {name}" in (path / "envd.yaml").read_text()
    runner.ok("build", name)
    return path


def check_tests_train_and_trace(runner: Envctl, name: str, model: str) -> dict[str, object]:
    """The project's tests pass inside it; a training run is what `trace` names for its model."""
    package = name.replace("-", "_")
    path = runner.cwd / name
    tests = runner("enter", name, "--", "python", "-m", "pytest", "-q", "-p", "no:cacheprovider")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "failed" not in tests.stdout, tests.stdout

    runner.ok("enter", name, "--", "python", "-m", f"{package}.train")
    runs = json.loads(runner.ok("--json", "runs", name))["runs"]
    train = next(r for r in runs if r["command"] == ["python", "-m", f"{package}.train"])
    assert (path / "models" / model).is_file()
    traced = runner("trace", str(path / "models" / model))
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert f"written by run {train['id']}" in traced.stdout
    assert f"python -m {package}.train" in traced.stdout
    shown: dict[str, object] = json.loads(runner.ok("--json", "runs", "show", train["id"]))
    written = json.loads((path / "metrics.json").read_text())
    recorded = shown["metrics"]
    assert isinstance(recorded, dict) and recorded
    for dotted, value in recorded.items():  # each recorded metric is the file's number
        node = written
        for part in dotted.split("."):
            node = node[part]
        assert node == pytest.approx(value)
    return shown


def test_the_sklearn_template_passes_its_tests_and_traces_its_model(runner: Envctl) -> None:
    new_and_build(runner, "sk-demo", "sklearn")
    shown = check_tests_train_and_trace(runner, "sk-demo", "model.pkl")
    assert "kind: random_forest" in shown["params"]["params.yaml"]  # type: ignore[index]
    versions = runner.ok(
        "enter", "sk-demo", "--", "python", "-c", "import sklearn, pandas; print('ok')"
    )
    assert versions.strip() == "ok"


def test_the_jupyter_template_passes_its_tests_and_traces_its_model(runner: Envctl) -> None:
    new_and_build(runner, "nb-demo", "jupyter")
    check_tests_train_and_trace(runner, "nb-demo", "model.json")
    lab = runner("enter", "nb-demo", "--", "jupyter", "lab", "--version")
    assert lab.returncode == 0 and lab.stdout.strip()[0].isdigit(), lab.stdout + lab.stderr
