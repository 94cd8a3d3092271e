"""Runs: what a run with a `runs:` section records, with a real store and hash cache (no engine)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from envd.errors import NotFound, UsageError, VerificationError
from envd.gateways.hashcache import HashCache
from envd.gateways.store import RunRow, Store
from envd.model.runrecord import RunRecord
from envd.model.spec import Runs as RunsSpec
from envd.services.newproject import package_name, substitute
from envd.services.reruns import Reruns, compare_outputs
from envd.services.runs import Runs

SPEC = RunsSpec(
    params=("params.yaml",), data=("data/",), outputs=("models/",), metrics=("metrics.json",)
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def row(run_id: str, project: str = "p") -> RunRow:
    return RunRow(
        run_id, project, ("python", "train.py"), "img", time.time(), 0, 0, False, "", "", "", False
    )


@pytest.fixture
def runs(tmp_path: Path) -> Runs:
    store = Store(tmp_path / "envd.db")
    return Runs(store, HashCache(tmp_path / "hashes.db"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.csv").write_bytes(b"x,y\n1,0\n")
    (root / "models").mkdir()
    (root / "models" / "untouched.bin").write_bytes(b"old")
    (root / "params.yaml").write_text("model:\n  lr: 0.1\n")
    return root


def run_once(runs: Runs, project: Path, run_id: str, model: bytes, loss: float) -> None:
    runs.start(row(run_id), SPEC, str(project), "sha256:" + "a" * 64)
    (project / "models" / "model.json").write_bytes(model)
    (project / "metrics.json").write_text(json.dumps({"loss": loss, "name": "x"}))
    finished = runs.finish(run_id, 0)
    assert finished.finished and finished.exit_code == 0


def test_a_run_records_params_data_outputs_and_metrics(runs: Runs, project: Path) -> None:
    run_once(runs, project, "aaaaaaaaaaaa", b"model-1", 0.5)
    record = runs.record("aaaaaaaaaaaa")
    assert record.params == {"params.yaml": "model:\n  lr: 0.1\n"}
    assert record.param_values == {"model.lr": "0.1"}
    assert record.data == {"data/train.csv": sha(b"x,y\n1,0\n")}
    assert record.outputs == {"models/model.json": sha(b"model-1")}  # not the untouched file
    assert record.metrics == {"loss": 0.5}
    assert any("name" in n for n in record.notes)  # a string metric is skipped, with a note
    assert record.image == "sha256:" + "a" * 64


def test_rewriting_the_same_bytes_is_an_output(runs: Runs, project: Path) -> None:
    run_once(runs, project, "aaaaaaaaaaaa", b"same", 0.5)
    run_once(runs, project, "bbbbbbbbbbbb", b"same", 0.5)
    first, again = runs.record("aaaaaaaaaaaa"), runs.record("bbbbbbbbbbbb")
    assert compare_outputs(first, again) == (1, [])
    run_once(runs, project, "cccccccccccc", b"other", 0.5)
    assert compare_outputs(first, runs.record("cccccccccccc")) == (0, ["models/model.json"])


def test_trace_finds_the_newest_writer_of_these_bytes(runs: Runs, project: Path) -> None:
    run_once(runs, project, "aaaaaaaaaaaa", b"model-1", 0.5)
    time.sleep(0.01)
    run_once(runs, project, "bbbbbbbbbbbb", b"model-2", 0.4)
    result = runs.trace("models/model.json", sha(b"model-2"))
    assert result.producer is not None and result.producer.id == "bbbbbbbbbbbb"
    assert [r.id for r in result.overwritten] == ["aaaaaaaaaaaa"]  # this path, other bytes
    old = runs.trace("models/model.json", sha(b"model-1"))
    assert old.producer is not None and old.producer.id == "aaaaaaaaaaaa"
    elsewhere = runs.trace("copy.json", sha(b"model-2"))  # same bytes under another name
    assert elsewhere.producer is not None and elsewhere.producer.id == "bbbbbbbbbbbb"
    with pytest.raises(NotFound):
        runs.trace("models/model.json", sha(b"never"))


def test_listing_filters_and_sorts(runs: Runs, project: Path) -> None:
    run_once(runs, project, "aaaaaaaaaaaa", b"1", 0.5)
    (project / "params.yaml").write_text("model:\n  lr: 0.01\n")
    run_once(runs, project, "bbbbbbbbbbbb", b"2", 0.2)
    assert [r.id for r in runs.records(where=["model.lr=0.01"])] == ["bbbbbbbbbbbb"]
    assert [r.id for r in runs.records(sort="loss")] == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]
    assert [r.id for r in runs.records(sort="-loss")] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    assert runs.records(status="failed") == []
    with pytest.raises(UsageError):
        runs.records(where=["lr<abc"])
    _, _, changes = runs.diff("aaaaaaaaaaaa", "bbbbbbbbbbbb")
    kinds = {(c.kind, c.name) for c in changes}
    assert ("param", "model.lr") in kinds and ("metric", "loss") in kinds


def test_data_made_by_the_run_is_hashed_at_its_end(runs: Runs, tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    runs.start(row("dddddddddddd"), SPEC, str(root))
    (root / "data").mkdir()
    (root / "data" / "made.csv").write_bytes(b"made")
    runs.finish("dddddddddddd", 3)
    record = runs.record("dddddddddddd")
    assert record.data == {"data/made.csv": sha(b"made")}
    assert record.exit_code == 3
    assert any("made by this run" in n for n in record.notes)


def test_without_a_runs_section_nothing_extra_is_stored(runs: Runs, project: Path) -> None:
    runs.start(row("eeeeeeeeeeee"), RunsSpec(), str(project))
    (project / "models" / "model.json").write_bytes(b"m")
    runs.finish("eeeeeeeeeeee", 0)
    assert runs.details("eeeeeeeeeeee") is None
    record = runs.record("eeeeeeeeeeee")
    assert record.outputs == {} and record.params == {}


def test_an_imported_record_is_traceable(runs: Runs, project: Path, tmp_path: Path) -> None:
    run_once(runs, project, "aaaaaaaaaaaa", b"model-1", 0.5)
    record = runs.record("aaaaaaaaaaaa")
    other = Runs(Store(tmp_path / "other.db"), HashCache(tmp_path / "other-hashes.db"))
    assert other.import_record(record) is True
    assert other.import_record(record) is False
    traced = other.trace("models/model.json", sha(b"model-1"))
    assert traced.producer is not None
    assert traced.producer.metrics == {"loss": 0.5}


@pytest.mark.parametrize(
    ("name", "package"),
    [
        ("churn", "churn"),
        ("churn-model", "churn_model"),
        ("3d.seg", "p_3d_seg"),
        ("class", "class_project"),
    ],
)
def test_package_names(name: str, package: str) -> None:
    assert package_name(name) == package


def test_substitution_tells_module_uses_from_the_name() -> None:
    text = (
        "# __project__\n    envctl enter . -- python -m __project__.train\n    __project__/  code\n"
    )
    out = substitute("README.md", text, "churn-model", "churn_model")
    assert out.splitlines() == [
        "# churn-model",
        "    envctl enter . -- python -m churn_model.train",
        "    churn_model/  code",
    ]
    assert (
        substitute("x/train.py", "from __project__ import data", "a-b", "a_b")
        == "from a_b import data"
    )


def test_sinks_get_each_finished_record_after_the_exit_status(
    tmp_path: Path, project: Path
) -> None:
    got: list[RunRecord] = []
    runs = Runs(Store(tmp_path / "s.db"), HashCache(tmp_path / "s-h.db"), sinks=[got.append])
    run_once(runs, project, "ffffffffffff", b"m", 0.25)
    runs.wait("ffffffffffff")
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.id for r in got] == ["ffffffffffff"]
    assert got[0].outputs == {"models/model.json": sha(b"m")} and got[0].metrics == {"loss": 0.25}
    plain: list[RunRecord] = []
    other = Runs(Store(tmp_path / "p.db"), HashCache(tmp_path / "p-h.db"), sinks=[plain.append])
    other.start(row("gggggggggggg"))
    other.finish("gggggggggggg", 1)
    deadline = time.monotonic() + 10
    while not plain and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(r.id, r.exit_code) for r in plain] == [("gggggggggggg", 1)]


def test_an_overlong_or_wildcard_run_id_is_no_run(runs: Runs) -> None:
    """`runs show <100000-char id>` is "no run" (exit 4), not a database error."""
    runs.start(row("abc123def456"))
    runs.start(row("abc999def456"))
    assert runs.get("abc1").id == "abc123def456"
    for wanted in ("x" * 100_000, "abc" + "%" * 50_000, "%", "_bc", "abc_", "a\\"):
        with pytest.raises(NotFound, match="no run") as caught:
            runs.get(wanted)
        assert caught.value.exit_code == 4


# ------------------------------------------------------------------ imported runs (issue 24)


class _NoProjects:
    """Reruns' collaborators: each call is recorded and refused (the checks come first)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve_registered(self, ref: str) -> object:
        self.asked.append(ref)
        raise NotFound(f"no project named {ref}")


def _statement(runs: Runs, project: Path, **changes: object) -> str:
    from envd.model.provenance import build_statement, statement_json

    run_once(runs, project, "abc000000001", b"model-1", 0.5)
    record = runs.record("abc000000001")
    fields = {**record.to_dict(), "id": "forged000001", **changes}
    forged = RunRecord.from_dict(fields)
    return statement_json(build_statement(forged, builder_id="https://example.com/b"))


def test_a_statement_from_the_future_is_refused_and_nothing_is_stored(
    runs: Runs, project: Path, tmp_path: Path
) -> None:
    text = _statement(runs, project, ended_at=4_070_908_800.0, started_at=4_070_908_700.0)
    other = Runs(Store(tmp_path / "other.db"), HashCache(tmp_path / "other-hashes.db"))
    refusal = r"s\.json: startedOn 2098-12-31T23:58:20Z is in the future"
    with pytest.raises(VerificationError, match=refusal) as caught:
        other.import_statement(text, "s.json")
    assert caught.value.exit_code == 9
    assert other.list() == []


def test_trace_names_the_local_run_and_marks_an_imported_one(runs: Runs, project: Path) -> None:
    text = _statement(runs, project, ended_at=time.time() + 3600, command=["touch", "x"])
    record, added = runs.import_statement(text, "/tmp/s.json")
    assert added and record.origin == "/tmp/s.json"
    result = runs.trace("models/model.json", sha(b"model-1"))
    assert result.producer is not None and result.producer.id == "abc000000001"
    assert not result.producer.imported
    assert [(r.id, r.origin) for r in result.exact[1:]] == [("forged000001", "/tmp/s.json")]
    assert runs.record("forged000001").origin == "/tmp/s.json"


def test_rerun_refuses_an_imported_run_without_an_environment_hash(
    runs: Runs, project: Path
) -> None:
    """F7: an empty hash skipped the environment check; now the run is refused first."""
    runs.import_statement(_statement(runs, project, environment_hash=""), "s.json")
    projects = _NoProjects()
    reruns = Reruns(runs, projects, object(), object(), object())  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match=r"imported from s\.json and records no envir"):
        reruns.check("forged000001", False, lambda _: None)
    assert projects.asked == []  # refused before any project was looked at


def test_rerun_runs_in_the_project_the_user_names(runs: Runs, project: Path) -> None:
    env = "sha256:" + "e" * 64
    runs.import_statement(_statement(runs, project, environment_hash=env), "s.json")
    projects = _NoProjects()
    reruns = Reruns(runs, projects, object(), object(), object())  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        reruns.check("forged000001", False, lambda _: None, project="mine")
    assert projects.asked == ["mine"]
