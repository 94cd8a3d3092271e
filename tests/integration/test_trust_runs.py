"""Issue 24, imported runs and bounded reads (F7, F8, bad input), on the real engine.

A colleague's statement is someone else's words: it can no longer date itself in the future,
skip the environment check with an empty hash, run its command without the user's say-so, or
pass for the local run in `trace`. Files handed to `trace` and `runs import` are read only if
they are regular files, with a bound. One project for the module (the `default` template with
a `runs:` section), built once on the module's `shared` daemon.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from envd.model.provenance import rfc3339, statement_json
from tests.conftest import Envctl, copy_template
from tests.integration.conftest import DefaultBuildCache, from_default_cache

pytestmark = pytest.mark.integration

QUICK_S = 60  # a refusal of a special file is immediate; a hang fails the test here
PWNED = ["sh", "-c", "touch /workspace/PWNED"]


@pytest.fixture(scope="module")
def project(shared: Envctl, default_build_cache: DefaultBuildCache) -> Path:
    """Built through the worker's build cache (the lock's inputs leave out `name:`, `runs:`)."""
    path = copy_template("default", shared.cwd / "trustruns")
    spec = path / "envd.yaml"
    spec.write_text(spec.read_text() + "name: trustruns\nruns:\n  outputs: [out/]\n")
    from_default_cache(shared, path, "trustruns", default_build_cache)
    return path


@pytest.fixture(scope="module")
def local_run(shared: Envctl, project: Path) -> dict[str, Any]:
    """One run made here, with one output; its statement, as `runs export` writes it."""
    shared.ok(
        "enter",
        "trustruns",
        "--",
        "sh",
        "-c",
        "mkdir -p /workspace/out && echo result > /workspace/out/result.txt",
    )
    runs = json.loads(shared.ok("--json", "runs", "trustruns"))["runs"]
    assert len(runs) == 1
    run_id = runs[0]["id"]
    statement = shared.cwd / "exported.json"
    shared.ok("runs", "export", run_id, "-o", str(statement))
    raw = json.loads(statement.read_text())
    assert raw["predicate"]["buildDefinition"]["internalParameters"]["environmentHash"]
    return {"id": run_id, "statement": raw}


def craft(
    shared: Envctl, exported: dict[str, Any], name: str, run_id: str, **internal: Any
) -> Path:
    """The exported statement with PWNED's command, another run id and `internal` set."""
    raw = copy.deepcopy(exported)
    raw["predicate"]["buildDefinition"]["externalParameters"]["command"] = PWNED
    raw["predicate"]["runDetails"]["metadata"]["invocationId"] = run_id
    raw["predicate"]["buildDefinition"]["internalParameters"].update(internal)
    path = shared.cwd / name
    path.write_text(statement_json(raw))
    return path


def dated(path: Path, finished: str) -> Path:
    raw = json.loads(path.read_text())
    raw["predicate"]["runDetails"]["metadata"]["startedOn"] = finished
    raw["predicate"]["runDetails"]["metadata"]["finishedOn"] = finished
    path.write_text(statement_json(raw))
    return path


def test_a_statement_dated_in_the_future_is_not_imported(
    shared: Envctl, project: Path, local_run: dict[str, Any]
) -> None:
    forged = dated(
        craft(shared, local_run["statement"], "future.json", "f0000000000a"),
        "2099-01-01T00:00:00Z",
    )
    refused = shared("runs", "import", str(forged))
    assert refused.returncode == 9, refused.stdout + refused.stderr
    assert "On 2099-01-01T00:00:00Z is in the future" in refused.stderr
    assert "f0000000000a" not in shared.ok("runs", "trustruns")
    assert shared("runs", "show", "f0000000000a").returncode == 4


def test_an_imported_run_without_an_environment_hash_is_never_rerun(
    shared: Envctl, project: Path, local_run: dict[str, Any]
) -> None:
    forged = craft(shared, local_run["statement"], "nohash.json", "e0000000000a")
    raw = json.loads(forged.read_text())
    del raw["predicate"]["buildDefinition"]["internalParameters"]["environmentHash"]
    forged.write_text(statement_json(raw))
    assert "imported run e0000000000a" in shared.ok("runs", "import", str(forged))
    refused = shared("rerun", "e0000000000a", "--yes", input="")
    assert refused.returncode == 9, refused.stdout + refused.stderr
    assert "records no environment hash" in refused.stderr
    assert not (project / "PWNED").exists()


def test_an_imported_command_is_not_run_without_confirmation(
    shared: Envctl, project: Path, local_run: dict[str, Any]
) -> None:
    forged = craft(shared, local_run["statement"], "valid.json", "d0000000000a")
    dated(forged, rfc3339(time.time() + 3600))  # within the clock-skew allowance, newest
    assert "imported run d0000000000a" in shared.ok("runs", "import", str(forged))
    refused = shared("rerun", "d0000000000a", input="")  # stdin is a pipe, not a terminal
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"imported from {forged}" in refused.stderr
    assert "command:      sh -c 'touch /workspace/PWNED'" in refused.stderr
    assert "--yes" in refused.stderr
    assert not (project / "PWNED").exists()

    # trace names the run made here, and marks the imported one, though it is newer
    result = project / "out" / "result.txt"
    out = shared.ok("trace", str(result))
    assert f"was written by run {local_run['id']}\n" in out
    assert f"d0000000000a (imported from {forged})" in out
    shown = shared.ok("runs", "show", "d0000000000a")
    assert f"run          d0000000000a  (imported from {forged})" in shown
    listing = shared.ok("runs", "trustruns")
    line = next(x for x in listing.splitlines() if x.startswith("d0000000000a"))
    assert "imported" in line
    mine = next(x for x in listing.splitlines() if x.startswith(local_run["id"]))
    assert "imported" not in mine
    assert hashlib.sha256(result.read_bytes()).hexdigest()[:12] in out


@pytest.mark.parametrize("command", [("trace",), ("runs", "import")])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_special_files_are_refused_at_once(
    shared: Envctl, tmp_path: Path, command: tuple[str, ...], kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
        what = "a FIFO"
    else:
        path, what = Path("/dev/zero"), "a device"
    proc = shared(*command, str(path), timeout=QUICK_S)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path} is {what}, not a regular file; refused" in proc.stderr


def test_an_overlong_run_id_is_no_run(shared: Envctl) -> None:
    proc = shared("runs", "show", "a" * 100_000, timeout=QUICK_S)
    assert proc.returncode == 4, proc.stderr[:2000]
    assert "no run aaaa" in proc.stderr and "database" not in proc.stderr
