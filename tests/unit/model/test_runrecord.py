"""Run records: metrics and params parsing, the runs table, filters, diff, trace."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from envd.gateways.hashcache import HashCache, changed
from envd.model.provenance import build_statement, check_statement, statement_json
from envd.model.runrecord import (
    MAX_METRICS,
    Change,
    CodeState,
    RunRecord,
    diff_runs,
    filter_runs,
    flatten_params,
    flatten_params_files,
    parse_metrics,
    parse_where,
    render_diff,
    render_table,
    render_trace,
    runs_table,
    sort_runs,
    trace,
    varying,
)
from envd.model.spec_parser import parse_spec


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


COMMIT = "a" * 40


def run(
    run_id: str, params: str = "", metrics: dict[str, float] | None = None, **kw: object
) -> RunRecord:
    return RunRecord(
        id=run_id,
        params={"params.yaml": params} if params else {},
        metrics=metrics or {},
        **kw,  # type: ignore[arg-type]
    )


# ------------------------------------------------------------------ metrics


def test_json_metrics_are_flattened_with_dots() -> None:
    parsed = parse_metrics(
        "metrics.json", '{"acc": 0.9, "val": {"loss": 0.25, "f1": {"macro": 1}}}'
    )
    assert parsed.values == {"acc": 0.9, "val.loss": 0.25, "val.f1.macro": 1.0}
    assert parsed.notes == ()


def test_non_numbers_are_skipped_with_a_note() -> None:
    text = json.dumps({"acc": 0.5, "name": "rf", "ok": True, "hist": [1, 2], "none": None})
    parsed = parse_metrics("metrics.json", text)
    assert parsed.values == {"acc": 0.5}
    assert len(parsed.notes) == 4
    assert any("name" in n and "not a number" in n for n in parsed.notes)


def test_nan_and_infinity_are_not_metrics() -> None:
    parsed = parse_metrics("metrics.json", '{"a": NaN, "b": Infinity, "c": 2}')
    assert parsed.values == {"c": 2.0}
    assert len(parsed.notes) == 2


def test_yaml_metrics() -> None:
    parsed = parse_metrics("m.yml", "train:\n  loss: 0.1\nepochs: 3\n")
    assert parsed.values == {"train.loss": 0.1, "epochs": 3.0}


def test_csv_header_and_last_row() -> None:
    text = "epoch,loss,acc\n1,0.9,0.5\n2,0.5,0.7\n3,0.2,0.8\n\n"
    assert parse_metrics("log.csv", text).values == {"epoch": 3.0, "loss": 0.2, "acc": 0.8}


def test_csv_name_value_rows() -> None:
    assert parse_metrics("m.csv", "acc,0.9\nloss,0.1\n").values == {"acc": 0.9, "loss": 0.1}
    assert parse_metrics("m.csv", "name,value\nacc,0.9\nloss,0.1\n").values == {
        "acc": 0.9,
        "loss": 0.1,
    }


def test_csv_header_with_a_text_column() -> None:
    parsed = parse_metrics("m.csv", "model,acc\nrf,0.9\n")
    assert parsed.values == {"acc": 0.9}
    assert any("model" in n for n in parsed.notes)


def test_bad_and_oversized_files() -> None:
    assert parse_metrics("m.json", "{not json").values == {}
    assert "not valid JSON" in parse_metrics("m.json", "{not json").notes[0]
    assert parse_metrics("m.json", "[1, 2]").values == {}
    big = json.dumps({f"k{i}": i for i in range(10)})
    cut = parse_metrics("m.json", big, max_bytes=20)
    assert cut.values == {} and "limit" in cut.notes[0]


def test_hostile_files_are_bounded() -> None:
    laughs = "a: &a [1, 1]\n" + "".join(
        f"{c}: &{c} {{{', '.join(f'k{i}: *{p}' for i in range(9))}}}\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    parsed = parse_metrics("m.yaml", laughs)  # 9**8 values if expanded
    assert len(parsed.values) <= MAX_METRICS
    assert any("more than" in n for n in parsed.notes)
    assert len(flatten_params("p.yaml", laughs).values) <= 2000
    deep = "[" * 100_000 + "]" * 100_000
    assert "not valid JSON" in parse_metrics("m.json", deep).notes[0]
    for depth in (990, 5000):
        nested = '{"a":' * depth + "1" + "}" * depth
        assert parse_metrics("m.json", nested).values in ({}, {".".join(["a"] * depth): 1.0})
        flatten_params("p.json", nested)  # no RecursionError escapes


def test_too_many_metrics_are_cut() -> None:
    parsed = parse_metrics("m.json", json.dumps({f"k{i}": i for i in range(MAX_METRICS + 5)}))
    assert len(parsed.values) == MAX_METRICS
    assert any("more than" in n for n in parsed.notes)


# ------------------------------------------------------------------ params


def test_params_flattened_to_dotted_keys() -> None:
    text = "seed: 0\nmodel:\n  kind: rf\n  depth: 3\n  layers: [1, 2]\nlr: 0.01\nuse_gpu: false\n"
    assert flatten_params("params.yaml", text).values == {
        "seed": "0",
        "model.kind": "rf",
        "model.depth": "3",
        "model.layers": "[1,2]",
        "lr": "0.01",
        "use_gpu": "false",
    }
    assert flatten_params("p.json", '{"a": {"b": null}}').values == {"a.b": "null"}


def test_several_params_files_are_prefixed() -> None:
    values, _ = flatten_params_files({"a.yaml": "x: 1\n", "b.yaml": "x: 2\n"})
    assert values == {"a.yaml:x": "1", "b.yaml:x": "2"}
    values, _ = flatten_params_files({"a.yaml": "x: 1\n"})
    assert values == {"x": "1"}


def test_params_that_are_not_yaml_are_kept_as_text() -> None:
    parsed = flatten_params("p.yaml", "a: [unclosed\n")
    assert parsed.values == {"p.yaml": "a: [unclosed"}
    assert parsed.notes


# ------------------------------------------------------------------ record


def test_record_validates_digests_and_metrics() -> None:
    with pytest.raises(ValueError, match="sha256"):
        RunRecord(id="r", outputs={"models/m.pkl": "abc"})
    with pytest.raises(ValueError, match="not a number"):
        RunRecord(id="r", metrics={"acc": True})
    with pytest.raises(ValueError, match="finite"):
        RunRecord(id="r", metrics={"acc": float("nan")})
    with pytest.raises(ValueError, match="commit"):
        CodeState(commit="xyz")
    with pytest.raises(ValueError, match="clean"):
        CodeState(commit=COMMIT, dirty=False, diff_sha256=h("d"))
    RunRecord(id="r", outputs={"models/link": "symlink:../x"})


def test_record_json_round_trip_is_canonical() -> None:
    record = RunRecord(
        id="r1",
        command=("python", "-m", "p.train"),
        code=CodeState(COMMIT, True, h("diff")),
        params={"params.yaml": "lr: 0.1\n"},
        data={"data/b.csv": h("b"), "data/a.csv": h("a")},
        outputs={"models/m.pkl": h("m")},
        metrics={"acc": 0.9},
        lock_sha256=h("lock"),
    )
    text = record.to_json()
    again = RunRecord.from_json(text)
    assert again == record
    assert again.to_json() == text
    assert text.index("data/a.csv") < text.index("data/b.csv")


# ------------------------------------------------------------------ table


def test_varying_shows_only_columns_that_differ() -> None:
    runs = [
        run("r1", "seed: 0\nlr: 0.1\n", {"acc": 0.8, "epochs": 3}),
        run("r2", "seed: 0\nlr: 0.2\n", {"acc": 0.9, "epochs": 3}),
        run("r3", "seed: 0\n", {"acc": 0.9, "epochs": 3}),
    ]
    assert varying(runs) == (["lr"], ["acc"])
    table = runs_table(runs)
    assert table.headers == ("run", "exit", "lr", "acc")
    assert table.rows[2] == ("r3", "0", "", "0.9")
    assert runs_table(runs, all_columns=True).headers == (
        "run",
        "exit",
        "lr",
        "seed",
        "acc",
        "epochs",
    )
    assert varying(runs[:1]) == (["lr", "seed"], ["acc", "epochs"])


def test_render_table_fits_the_width() -> None:
    runs = [
        run(f"run{i}", f"name: {'x' * 50}{i}\nlr: 0.{i}\n", {"accuracy": i / 10}) for i in range(3)
    ]
    wide = render_table(runs_table(runs), width=200)
    assert "x" * 50 in wide
    narrow = render_table(runs_table(runs), width=40)
    lines = narrow.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert "…" in narrow
    assert lines[0].split()[:2] == ["run", "exit"]
    tiny = render_table(runs_table(runs), width=20)
    assert all(len(line) <= 20 for line in tiny.splitlines()[:-1])
    assert "more column" in tiny.splitlines()[-1]


def test_numbers_align_right() -> None:
    table = runs_table([run("a", metrics={"m": 1.5}), run("b", metrics={"m": 10.25})])
    lines = render_table(table).splitlines()
    assert lines[1].endswith("  1.5") and lines[2].endswith("10.25")


# ------------------------------------------------------------------ filter, sort


def test_where_filters_params_and_metrics() -> None:
    runs = [
        run("r1", "lr: 0.1\nmodel:\n  kind: rf\n", {"acc": 0.8}),
        run("r2", "lr: 0.10\nmodel:\n  kind: svm\n", {"acc": 0.95}),
        run("r3", "lr: 0.2\n", {"acc": 0.9}),
    ]
    ids = lambda rs: [r.id for r in rs]  # noqa: E731
    assert ids(filter_runs(runs, [parse_where("lr=0.1")])) == ["r1", "r2"]
    assert ids(filter_runs(runs, [parse_where("model.kind=rf")])) == ["r1"]
    assert ids(filter_runs(runs, [parse_where("model.kind!=rf")])) == ["r2", "r3"]
    assert ids(filter_runs(runs, [parse_where("acc>=0.9"), parse_where("lr = 0.2")])) == ["r3"]
    assert ids(filter_runs(runs, [parse_where("acc<0.9")])) == ["r1"]
    with pytest.raises(ValueError):
        parse_where("no operator")
    with pytest.raises(ValueError):
        parse_where("acc>high")


def test_sort_by_metric() -> None:
    runs = [run("a", metrics={"acc": 0.5}), run("b"), run("c", metrics={"acc": 0.9})]
    assert [r.id for r in sort_runs(runs, "acc")] == ["a", "c", "b"]
    assert [r.id for r in sort_runs(runs, "-acc")] == ["c", "a", "b"]
    assert [r.id for r in sort_runs(iter(runs), "acc")] == ["a", "c", "b"]


# ------------------------------------------------------------------ diff


def test_diff_names_every_change() -> None:
    a = RunRecord(
        id="a",
        command=("python", "train.py"),
        params={"params.yaml": "lr: 0.1\nseed: 0\n"},
        data={"data/x.csv": h("x1")},
        outputs={"models/m.pkl": h("m1"), "old.txt": h("o")},
        metrics={"acc": 0.8},
        code=CodeState(COMMIT, False, ""),
        environment_hash="env1",
        host_hash="host1",
        lock_sha256=h("l1"),
    )
    b = RunRecord(
        id="b",
        command=("python", "train.py"),
        params={"params.yaml": "lr: 0.2\nseed: 0\n"},
        data={"data/x.csv": h("x2")},
        outputs={"models/m.pkl": h("m2")},
        metrics={"acc": 0.9, "f1": 0.7},
        code=CodeState("b" * 40, True, h("d")),
        environment_hash="env1",
        host_hash="host2",
        lock_sha256=h("l1"),
    )
    changes = diff_runs(a, b)
    named = {(c.kind, c.name) for c in changes}
    assert named == {
        ("param", "lr"),
        ("metric", "acc"),
        ("metric", "f1"),
        ("data", "data/x.csv"),
        ("output", "models/m.pkl"),
        ("output", "old.txt"),
        ("code", "commit"),
        ("code", "dirty"),
        ("code", "diff"),
        ("host", "host hash"),
    }
    assert Change("metric", "f1", None, "0.7") in changes
    assert Change("output", "old.txt", h("o"), None) in changes
    assert diff_runs(a, a) == []
    text = render_diff(a, b, changes)
    assert "param lr: 0.1 -> 0.2" in text and "10 changes" in text
    assert "no differences" in render_diff(a, a, [])


# ------------------------------------------------------------------ trace


def test_trace_finds_the_producing_run() -> None:
    older = RunRecord(id="old", ended_at=1.0, outputs={"models/m.pkl": h("v1")})
    newer = RunRecord(id="new", ended_at=2.0, outputs={"models/m.pkl": h("v2")})
    copy = RunRecord(id="copy", ended_at=3.0, outputs={"backup/m.pkl": h("v1")})
    result = trace("models/m.pkl", h("v1"), [older, newer, copy])
    assert result.producer is older
    assert [r.id for r in result.overwritten] == ["new"]
    assert [(r.id, p) for r, p in result.same_content] == [("copy", "backup/m.pkl")]
    assert trace("models/m.pkl", h("v3"), [older]).producer is None


def test_render_trace_names_everything_the_file_came_from() -> None:
    run_a = RunRecord(
        id="run-7",
        command=("python", "-m", "p.train"),
        started_at=0.0,
        ended_at=60.0,
        environment_hash="e" * 64,
        code=CodeState(COMMIT, True, h("diff")),
        params={"params.yaml": "lr: 0.1\n"},
        data={"data/x.csv": h("x")},
        outputs={"models/m.pkl": h("m")},
        metrics={"acc": 0.9},
    )
    text = render_trace("models/m.pkl", h("m"), trace("models/m.pkl", h("m"), [run_a]))
    assert "written by run run-7" in text
    assert "python -m p.train" in text and "e" * 64 in text
    assert COMMIT[:12] + " + uncommitted changes" in text
    assert "lr = 0.1" in text and "data/x.csv" in text and "acc = 0.9" in text
    assert "1970-01-01 00:01:00 UTC" in text
    missing = render_trace("models/m.pkl", h("z"), trace("models/m.pkl", h("z"), [run_a]))
    assert "no recorded run" in missing and "run-7" in missing


# ------------------------------------------------------------------ project templates
# environments/<t>/project/ is a whole project for `envctl new NAME --template T`: every
# occurrence of the placeholder `__project__` (the package folder's name, and text in any file)
# becomes NAME. `instantiate` below does exactly that, as `envctl new` is to.

PLACEHOLDER = "__project__"
ENVIRONMENTS = Path(__file__).resolve().parents[3] / "environments"
TEMPLATES = ("default", "sklearn", "pytorch-cpu", "jupyter")
NEEDS = {"default": "yaml", "sklearn": "sklearn", "pytorch-cpu": "torch", "jupyter": "pandas"}


def instantiate(template: str, target: Path, name: str) -> Path:
    source = ENVIRONMENTS / template / "project"
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or ".ruff_cache" in path.parts:
            continue
        relative = Path(
            *(name if part == PLACEHOLDER else part for part in path.relative_to(source).parts)
        )
        if path.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_text(path.read_text().replace(PLACEHOLDER, name))
    return target


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_is_a_whole_project(template: str) -> None:
    root = ENVIRONMENTS / template / "project"
    for name in ("envd.yaml", "params.yaml", "README.md", ".gitignore", "pyproject.toml"):
        assert (root / name).is_file(), name
    package = root / PLACEHOLDER
    for name in ("__init__.py", "config.py", "train.py", "evaluate.py"):
        assert (package / name).is_file(), name
    assert list((root / "tests").glob("test_*.py"))
    for path in root.rglob("*.py"):
        ast.parse(path.read_text(), str(path))
    readme = (root / "README.md").read_text()
    for word in ("envctl lock", "envctl enter", f"python -m {PLACEHOLDER}.train", "trace", "share"):
        assert word in readme, word
    ignored = (root / ".gitignore").read_text().split()
    assert {"data/", "models/", "metrics.json"} <= set(ignored)
    assert "params.yaml" in (package / "config.py").read_text()


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_envd_yaml_is_the_environment_plus_runs(template: str) -> None:
    plain = yaml.safe_load((ENVIRONMENTS / template / "envd.yaml").read_text())
    text = (ENVIRONMENTS / template / "project" / "envd.yaml").read_text()
    project = yaml.safe_load(text)
    assert project.pop("name") == PLACEHOLDER
    assert project.pop("runs") == {
        "params": ["params.yaml"],
        "data": ["data/"],
        "outputs": ["models/"],
        "metrics": ["metrics.json"],
    }
    packages = project.pop("packages")
    assert packages[: len(plain["packages"])] == plain.pop("packages")
    assert "pytest" in packages and set(packages[len(plain.get("packages", [])) :]) >= {"pytest"}
    assert project == plain  # same base, python, env, ports, gpu
    # The rest is a valid spec (the `runs:` section is cut: it comes last in these files).
    spec_text = text[: text.index("\nruns:")].replace(PLACEHOLDER, "demo") + "\n"
    spec = parse_spec(spec_text, source="envd.yaml", project_dir="/tmp/demo")
    assert "pytest" in " ".join(spec.packages)


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_params_flatten(template: str) -> None:
    params = flatten_params(
        "params.yaml", (ENVIRONMENTS / template / "project" / "params.yaml").read_text()
    )
    assert params.notes == ()
    assert params.values["seed"] == "0"
    assert any(key.startswith("model.") for key in params.values)


def test_default_template_needs_only_pyyaml(tmp_path: Path) -> None:
    root = instantiate("default", tmp_path / "demo", "demo_proj")
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"demo_proj", "__future__"}
    assert third_party <= {"yaml", "pytest"}, third_party


def test_default_template_run_is_recorded_end_to_end(tmp_path: Path) -> None:
    """Instantiate, train and evaluate as `envctl enter` would, and record the run."""
    root = instantiate("default", tmp_path / "demo", "demo_proj")
    assert PLACEHOLDER not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    runs_paths = ["models/", "metrics.json"]
    with HashCache(tmp_path / "hashes.sqlite") as cache:
        before = cache.snapshot(root, runs_paths)
        for entry in ("train", "evaluate"):
            subprocess.run(
                [sys.executable, "-m", f"demo_proj.{entry}"],
                cwd=root,
                env=env,
                check=True,
                capture_output=True,
            )
        after = cache.snapshot(root, runs_paths)
        outputs = changed(before, after)
        data = cache.snapshot(root, ["data/"])
    assert set(outputs) == {"models/model.json", "metrics.json"}
    assert set(data) == {"data/dataset.csv"}
    metrics = parse_metrics("metrics.json", (root / "metrics.json").read_text())
    assert metrics.notes == ()
    assert set(metrics.values) == {
        "train.accuracy",
        "train.log_loss",
        "test.accuracy",
        "test.log_loss",
        "test.samples",
    }
    assert 0.7 < metrics.values["test.accuracy"] <= 1.0
    record = RunRecord(
        id="run-1",
        command=("python", "-m", "demo_proj.train"),
        params={"params.yaml": (root / "params.yaml").read_text()},
        data=data,
        outputs=outputs,
        metrics=metrics.values,
    )
    assert record.param_values["model.learning_rate"] == "0.5"
    statement = statement_json(build_statement(record, builder_id="https://example.org/envd"))
    model_digest = hashlib.sha256((root / "models" / "model.json").read_bytes()).hexdigest()
    assert check_statement(statement, "models/model.json", model_digest).ok


@pytest.mark.parametrize("template", TEMPLATES)
def test_template_own_tests_pass(template: str, tmp_path: Path) -> None:
    """The template's tests, run by pytest inside the instantiated project."""
    pytest.importorskip(NEEDS[template])
    root = instantiate(template, tmp_path / "proj", "my_model")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_a_record_keeps_where_in_the_project_it_ran_and_refuses_paths_outside() -> None:
    record = RunRecord(id="r1", command=("python", "x.py"), workdir="notebooks/week1")
    again = RunRecord.from_json(record.to_json())
    assert again.workdir == "notebooks/week1" and again == record
    assert RunRecord.from_dict({"id": "old"}).workdir == ""  # recorded before workdirs: the root
    for bad in ("/abs", "../up", "a/../b", "a//b", "./a"):
        with pytest.raises(ValueError, match="not a path inside the project"):
            RunRecord(id="r2", workdir=bad)


def test_trace_prefers_local_runs_and_never_ranks_a_future_run_first() -> None:
    """F8: a forged statement dated 2099 does not become the producer of these bytes."""
    bytes_ = {"models/m.pkl": h("v1")}
    local = RunRecord(id="local", ended_at=100.0, outputs=bytes_)
    forged = RunRecord(id="forged", ended_at=4.1e9, outputs=bytes_, origin="s.json")
    later_import = RunRecord(id="later", ended_at=150.0, outputs=bytes_, origin="t.json")
    result = trace("models/m.pkl", h("v1"), [forged, later_import, local], now=200.0)
    assert [r.id for r in result.exact] == ["local", "later", "forged"]
    only_imported = trace("models/m.pkl", h("v1"), [forged, later_import], now=200.0)
    assert only_imported.producer is later_import
    future_here = RunRecord(id="clock", ended_at=4.1e9, outputs=bytes_)
    assert trace("models/m.pkl", h("v1"), [future_here, local], now=200.0).producer is local


def test_render_trace_marks_imported_runs() -> None:
    run = RunRecord(id="run-9", ended_at=1.0, outputs={"m": h("m")}, origin="s.json")
    local = RunRecord(id="run-8", ended_at=2.0, outputs={"m": h("m")})
    text = render_trace("m", h("m"), trace("m", h("m"), [run]))
    assert "written by run run-9 (imported from s.json)" in text
    both = render_trace("m", h("m"), trace("m", h("m"), [run, local]))
    assert "written by run run-8\n" in both
    assert "also written, with the same bytes, by: run-9 (imported from s.json)" in both
    assert RunRecord.from_json(run.to_json()).origin == "s.json"
    assert "origin" not in local.to_dict()  # a local run's canonical JSON is unchanged
