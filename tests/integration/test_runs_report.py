"""`envctl runs report`: real runs on the real engine, the page rendered by headless Chromium.

One daemon for the module (`shared`); one small project made with `envctl new --template
default`, run three times with other params. Chromium (Debian's `chromium`, installed by
scripts/setup.sh) loads the page from a file with no network, runs its scripts, and dumps the
DOM; the page records every error, warning and blocked fetch into #envd-console.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

GIT = ("git", "-c", "user.email=t@example.com", "-c", "user.name=t")
CHROMIUM = shutil.which("chromium")


def git(cwd: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def set_params(path: Path, learning_rate: str, epochs: str) -> None:
    params = path / "params.yaml"
    text = re.sub(r"learning_rate: \S+", f"learning_rate: {learning_rate}", params.read_text())
    params.write_text(re.sub(r"epochs: \S+", f"epochs: {epochs}", text))


@pytest.fixture(scope="module")
def project(shared: Envctl) -> Path:
    """`envctl new rpt --template default`, smaller, committed, locked, run three times."""
    shared.ok("new", "rpt", "--template", "default")
    path = shared.cwd / "rpt"
    params = path / "params.yaml"
    params.write_text(params.read_text().replace("samples: 400", "samples: 120"))
    shared.ok("lock", str(path))
    shared.ok("build", str(path))
    git(path, "init", "-q")
    for n, (rate, epochs) in enumerate([("0.5", "20"), ("0.05", "20"), ("0.2", "40")]):
        set_params(path, rate, epochs)
        git(path, "add", "-A")
        git(path, "commit", "-qm", f"run {n}")
        shared.ok("enter", "rpt", "--", "python", "-m", "rpt.train")
    return path


def render(page: Path, profile: Path) -> tuple[str, str]:
    """Chromium's DOM after the page's scripts ran (5 s of virtual time), and its log."""
    assert CHROMIUM
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def chart_parts(dom: str) -> dict[str, str]:
    """Each chart container's markup (up to the next container or section)."""
    parts = re.split(r'(?=<div id="chart-)|(?=<h2>)', dom)
    out = {}
    for part in parts:
        found = re.match(r'<div id="(chart-[a-z0-9-]+)"', part)
        if found:
            out[found.group(1)] = part
    return out


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` here: scripts/setup.sh installs it")
def test_report_renders_runs_params_metrics_and_charts_with_no_errors(
    shared: Envctl, project: Path, tmp_path: Path
) -> None:
    runs = json.loads(shared.ok("--json", "runs", "rpt"))["runs"]
    assert len(runs) == 3
    page = tmp_path / "runs.html"
    out = shared.ok("runs", "report", "rpt", "-o", str(page), "--metric", "train.log_loss")
    assert f"wrote {page} (3 runs)" in out

    dom, log = render(page, tmp_path / "chromium-profile")

    console = re.search(r'<pre id="envd-console"[^>]*>(.*?)</pre>', dom, re.S)
    assert console is not None and console.group(1) == "", console.group(1) if console else dom
    assert "Uncaught" not in log
    assert [line for line in log.splitlines() if "CONSOLE" in line] == []
    assert 'data-charts-drawn="3"' in dom  # two params vary, then the parallel coordinates

    table = dom.split('<table id="runs">', 1)[1].split("</table>", 1)[0]
    for run in runs:
        assert f'href="#run-{run["id"]}"' in table and run["id"][:12] in table
        assert run["git_commit"][:8] in table
        assert f'<section id="run-{run["id"]}"' in dom
        assert run["environment_hash"] in dom
        assert run["environment_hash"].removeprefix("sha256:")[:12] in table
    for name in ("model.learning_rate", "model.epochs", "train.accuracy", "train.log_loss"):
        assert f">{name}</th>" in table
    assert ">seed</th>" not in table  # the same in every run

    charts = chart_parts(dom)
    assert sorted(charts) == ["chart-parallel", "chart-param-0", "chart-param-1"]
    for chart_id, markup in charts.items():
        assert re.search(r'<svg[^>]*class="marks"', markup), f"{chart_id} drew nothing"
        assert "train.log_loss" in markup, chart_id  # the metric's axis title, as SVG text
    assert "model.epochs" in charts["chart-param-0"]  # params in name order
    assert "model.learning_rate" in charts["chart-param-1"]
    assert "model.learning_rate" in charts["chart-parallel"]


def test_report_refuses_a_metric_no_run_has(shared: Envctl, project: Path, tmp_path: Path) -> None:
    page = tmp_path / "x.html"
    refused = shared("runs", "report", "rpt", "-o", str(page), "--metric", "f1")
    assert refused.returncode == 4, refused.stderr
    assert "metric 'f1'" in refused.stderr and "train.accuracy" in refused.stderr
    assert not page.exists()
