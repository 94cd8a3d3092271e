"""The quick runs that `bench --only runs` shares by the hundred vary a param of the default
template and write what `envctl share run` needs (an output and metrics), so the bench cannot
silently share 200 identical runs, or none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.runs import QUICK_RUN, TEMPLATE_RATE
from tests.conftest import ROOT

PARAMS = ROOT / "environments" / "default" / "project" / "params.yaml"


def test_the_template_has_the_param_the_runs_vary() -> None:
    assert PARAMS.read_text().count(TEMPLATE_RATE) == 1


def test_a_quick_run_writes_an_output_and_metrics_from_its_params(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(
        PARAMS.read_text().replace(TEMPLATE_RATE, "learning_rate: 0.25")
    )

    subprocess.run([sys.executable, "-c", QUICK_RUN], cwd=tmp_path, check=True)

    assert json.loads((tmp_path / "models" / "model.json").read_text()) == {"learning_rate": 0.25}
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"loss": 0.8}
