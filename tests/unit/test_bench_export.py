"""The benchmark's edits to the exported Dockerfile match what `envctl export` renders, so
`make bench` cannot silently measure a baseline without its CA bundle (or crash late)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import Mode, add_package, with_pip_cert
from envd.model.dockerfile import render
from envd.model.plan import make_plan
from tests.conftest import ROOT
from tests.unit.model.test_plan import NUMPY, SIX, lock


def test_the_ca_bundle_reaches_the_exported_pip_step() -> None:
    the_lock = lock((NUMPY, SIX), setup=("echo hi",))
    text = with_pip_cert(render(make_plan("p", the_lock), the_lock), "/tmp/ca.pem")
    lines = text.splitlines()
    runs = [i for i, line in enumerate(lines) if "/opt/venv/bin/pip install" in line]
    assert len(runs) == 1
    assert lines[runs[0] - 1] == "COPY ca.pem /tmp/ca.pem"
    argv = json.loads(lines[runs[0]].removeprefix("RUN "))
    assert argv[:2] == ["sh", "-c"]
    assert argv[2].startswith("PIP_CERT=/tmp/ca.pem /opt/venv/bin/pip install --no-cache-dir")
    assert "rm /tmp/requirements.lock.txt" in argv[2]  # the rest of the step is intact


def test_an_export_without_the_pip_step_fails_loudly() -> None:
    the_lock = lock((NUMPY,))
    text = render(make_plan("p", the_lock), the_lock)
    changed = text.replace('"sh", "-c", "/opt/venv/bin/pip install', '"/opt/venv/bin/pip", "x')
    with pytest.raises(SystemExit, match="export dockerfile"):
        with_pip_cert(changed, "/tmp/ca.pem")


@pytest.mark.parametrize("template", ["default", "sklearn"])
def test_a_package_is_added_to_each_templates_list(template: str) -> None:
    text = (ROOT / "environments" / template / "envd.yaml").read_text()
    more = add_package(text, "six")
    assert more != text and "\n  - six\n" in more
    import yaml

    assert "six" in yaml.safe_load(more)["packages"]


def test_smoke_runs_every_case_once_on_the_small_template() -> None:
    smoke, quick = Mode(reps=3, smoke=True), Mode(reps=3)
    assert [smoke.times(n) for n in (1, 2, 3)] == [1, 1, 1]
    assert [quick.times(n) for n in (1, 2, 3)] == [3, 6, 9]
    assert (smoke.template, quick.template) == ("default", "sklearn")


def test_make_check_runs_the_bench_smoke() -> None:
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = ""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current:
            targets[current][1].append(line.strip())
        elif ":" in line and not line.startswith((" ", "#", ".")) and "=" not in line:
            current, deps = line.split(":", 1)
            targets[current] = (deps.split("#")[0].split(), [])
    assert "bench-smoke" in targets["check"][0]
    assert any("-m bench --smoke" in command for command in targets["bench-smoke"][1])
