"""`envctl runs report`: the page's content from records (table, varying params, Vega-Lite
specs as data), escaping of records that came from someone else, the vendored libraries, and the
command against a fake daemon. The page in a real browser: tests/integration/test_runs_report.py.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.app import cli
from cli.commands.report import report_cmd
from cli.context import AppContext
from cli.report.charts import axis_of, charts, metric_against_param, parallel_coordinates
from cli.report.page import Asset, render, script_json, vendored_assets
from cli.report.runs import ReportRun, anchors, build_report, when
from envd.errors import EnvdError, NotFound, VerificationError
from envd.model.runrecord import CodeState, RunRecord
from envd.v1 import envd_pb2 as pb

HOSTILE = '</script><script>alert(1)</script><img src=x onerror="alert(2)">\u2028&amp;'


def run(
    n: int,
    lr: str,
    opt: str = "sgd",
    metrics: dict[str, float] | None = None,
    *,
    seed: str = "1",
    origin: str = "",
    run_id: str = "",
) -> ReportRun:
    record = RunRecord(
        id=run_id or f"{n:02d}" + "ab" * 11,
        project="demo",
        command=("python", "-m", "demo.train"),
        started_at=1_700_000_000.0 + 60 * n,
        ended_at=1_700_000_003.0 + 60 * n,
        environment_hash=f"{n}" * 64,
        code=CodeState("c" * 40),
        params={"params.yaml": f"train:\n  lr: {lr}\n  optimizer: {opt}\n  seed: {seed}\n"},
        metrics={"accuracy": 0.8, "loss": 0.2} if metrics is None else metrics,
    )
    return ReportRun(record, origin=origin, full=record.to_dict())


@pytest.fixture
def three() -> list[ReportRun]:
    return [
        run(0, "0.5", "sgd", {"accuracy": 0.8, "loss": 0.3}),
        run(1, "0.05", "adam", {"accuracy": 0.9, "loss": 0.1}),
        run(2, "0.1", "sgd", {"accuracy": 0.85, "loss": 0.2}, origin="imported"),
    ]


def fields(spec: Any) -> Iterator[str]:
    """Every `field` a spec names, anywhere in it."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "field" and isinstance(value, str):
                yield value
            yield from fields(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from fields(item)


# ------------------------------------------------------------------ content


def test_the_table_shows_only_the_params_that_vary_and_every_metric(
    three: list[ReportRun],
) -> None:
    report = build_report("demo", three)
    assert report.params == ("train.lr", "train.optimizer")  # seed is 1 everywhere
    assert report.metrics == ("accuracy", "loss")
    assert report.headers == (
        "run",
        "when",
        "status",
        "commit",
        "command",
        "train.lr",
        "train.optimizer",
        "accuracy",
        "loss",
        "environment",
        "origin",
    )
    first, _, imported = report.rows
    assert first[0] == three[0].record.id[:12]
    assert first[2:5] == ("ok", "cccccccc", "python -m demo.train")
    assert first[5:9] == ("0.5", "sgd", "0.8", "0.3")
    assert first[9] == "0" * 12 and first[10] == ""
    assert imported[10] == "imported"


def test_the_default_metric_is_the_first_and_an_unknown_one_is_refused(
    three: list[ReportRun],
) -> None:
    assert build_report("demo", three).metric == "accuracy"
    assert build_report("demo", three, "loss").metric == "loss"
    with pytest.raises(NotFound) as refused:
        build_report("demo", three, "f1")
    assert refused.value.exit_code == 4
    assert "'f1'" in refused.value.message and "accuracy, loss" in (refused.value.hint or "")


def test_the_default_metric_is_the_first_that_varies() -> None:
    runs = [
        run(0, "1", metrics={"accuracy": 1.0, "loss": 0.5}),
        run(1, "2", metrics={"accuracy": 1.0, "loss": 0.2}),
    ]
    report = build_report("demo", runs)
    assert report.metric == "loss" and report.metrics == ("accuracy", "loss")
    parallel = charts(report)[-1].spec
    assert parallel["layer"][0]["encoding"]["x"]["sort"] == ["train.lr", "loss"]
    assert build_report("demo", runs[:1]).metric == "accuracy"  # one run: nothing varies


def test_the_environment_is_named_by_its_digest_without_the_algorithm() -> None:
    record = RunRecord(id="x", environment_hash="sha256:" + "ab" * 32)
    assert build_report("p", [ReportRun(record)]).rows[0][-2] == "ab" * 6


def test_status_and_times_that_no_clock_shows() -> None:
    crashed = ReportRun(RunRecord(id="x", exit_code=3), full={})
    running = ReportRun(RunRecord(id="y"), finished=False)
    report = build_report("p", [crashed, running])
    assert [r[2] for r in report.rows] == ["exit 3", "running"]
    for stamp in (0.0, -5.0, 1e300, float("nan"), float("inf")):
        assert when(stamp) == "-"


def test_anchors_are_plain_and_unique_whatever_the_ids() -> None:
    assert anchors(["abc", 'a"b<c>', "abc", "x" * 200]) == ("run-abc", "run-1", "run-2", "run-3")


# ------------------------------------------------------------------ charts


def test_one_chart_per_varying_param_then_the_parallel_coordinates(
    three: list[ReportRun],
) -> None:
    drawn = charts(build_report("demo", three))
    assert [c.id for c in drawn] == ["chart-param-0", "chart-param-1", "chart-parallel"]
    assert [c.title for c in drawn[:2]] == ["accuracy by train.lr", "accuracy by train.optimizer"]


def test_a_numeric_param_gets_a_quantitative_axis_and_a_name_a_nominal_one(
    three: list[ReportRun],
) -> None:
    numeric = metric_against_param(three, "train.lr", "loss")
    assert numeric is not None
    assert numeric["encoding"]["x"]["type"] == "quantitative"
    assert [(v["x"], v["y"]) for v in numeric["data"]["values"]] == [
        (0.5, 0.3),
        (0.05, 0.1),
        (0.1, 0.2),
    ]
    named = metric_against_param(three, "train.optimizer", "loss")
    assert named is not None
    assert named["encoding"]["x"]["type"] == "nominal"
    assert named["encoding"]["x"]["sort"] == ["adam", "sgd"]
    assert named["encoding"]["y"]["title"] == "loss"


def test_runs_without_the_metric_are_left_out_of_its_charts() -> None:
    runs = [run(0, "1", metrics={"accuracy": 0.5}), run(1, "2", metrics={})]
    spec = metric_against_param(runs, "train.lr", "accuracy")
    assert spec is not None and [v["x"] for v in spec["data"]["values"]] == [1.0]
    assert metric_against_param(runs[1:], "train.lr", "accuracy") is None


def test_no_metric_means_no_metric_charts_and_the_page_says_so() -> None:
    runs = [run(0, "1", metrics={}), run(1, "2", metrics={})]
    report = build_report("p", runs)
    assert report.metric == "" and charts(report) == []
    assert "No run recorded a metric." in render(report, [])


def test_parallel_axes_scale_numbers_and_space_names_evenly() -> None:
    numbers = axis_of("lr", {"a": "0.5", "b": "0.05", "c": "0.1"})
    assert numbers.positions == {"a": 1.0, "b": 0.0, "c": pytest.approx(0.05 / 0.45)}
    assert numbers.ticks == [(0.0, "0.05"), (1.0, "0.5")]
    names = axis_of("opt", {"a": "sgd", "b": "adam", "c": "sgd"})
    assert names.positions == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert names.ticks == [(0.0, "adam"), (1.0, "sgd")]
    one = axis_of("seed", {"a": "1", "b": "1"})
    assert one.positions == {"a": 0.5, "b": 0.5}


def test_parallel_coordinates_follow_params_then_metrics(three: list[ReportRun]) -> None:
    spec = parallel_coordinates(three, ["train.lr", "train.optimizer"], ["accuracy"], "accuracy")
    assert spec is not None
    rules, lines, _, ticks = spec["layer"]
    order = ["train.lr", "train.optimizer", "accuracy"]
    assert [r["axis"] for r in rules["data"]["values"]] == order
    assert rules["encoding"]["x"]["sort"] == order
    first = [v for v in lines["data"]["values"] if v["run"] == three[0].record.id[:12]]
    assert [(v["axis"], v["pos"], v["value"]) for v in first] == [
        ("train.lr", 1.0, "0.5"),
        ("train.optimizer", 1.0, "sgd"),
        ("accuracy", 0.0, "0.8"),
    ]
    assert lines["encoding"]["color"]["title"] == "accuracy"
    assert {"axis": "accuracy", "pos": 1.0, "label": "0.9"} in ticks["data"]["values"]


def test_a_metric_named_like_a_param_gets_its_own_axis() -> None:
    runs = [
        run(0, "1", metrics={"train.lr": 0.5}),
        run(1, "2", metrics={"train.lr": 0.7}),
    ]
    spec = parallel_coordinates(runs, ["train.lr"], ["train.lr"], "")
    assert spec is not None
    assert spec["layer"][0]["encoding"]["x"]["sort"] == ["train.lr", "train.lr (metric)"]
    assert "color" not in spec["layer"][1]["encoding"]


def test_no_record_name_ever_becomes_a_field_or_an_expression() -> None:
    runs = [
        run(0, "1", "a.b", {HOSTILE: 1.0, "datum.x": 2.0}),
        run(1, "2", "c[0]", {HOSTILE: 3.0, "datum.x": 4.0}),
    ]
    for chart in charts(build_report("p", runs, HOSTILE)):
        assert set(fields(chart.spec)) <= {
            "run",
            "x",
            "y",
            "label",
            "axis",
            "pos",
            "value",
            "shade",
        }
        text = json.dumps(chart.spec)
        for key in ("expr", "calculate", "filter", "labelExpr", "href", "url"):
            assert f'"{key}"' not in text


# ------------------------------------------------------------------ the page


class Page(HTMLParser):
    """What a browser's parser makes of the page: scripts, links, ids, text."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.ids: list[str] = []
        self.handlers: list[str] = []
        self.text: list[str] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.handlers += [k for k in found if k.startswith("on")]
        if "href" in found:
            self.hrefs.append(found["href"] or "")
        if "src" in found:
            self.srcs.append(found["src"] or "")
        if "id" in found:
            self.ids.append(found["id"] or "")
        if tag == "script":
            self._in_script = found
            self.scripts.append((found, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        else:
            self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def hostile_runs() -> list[ReportRun]:
    runs = []
    for n in range(2):
        record = RunRecord(
            id=f'"><b>{n}',
            project=HOSTILE,
            command=("sh", "-c", HOSTILE),
            environment_hash=HOSTILE,
            params={"params.yaml": f"name: '{HOSTILE}{n}'\nurl: 'javascript:alert({n})'\n"},
            metrics={HOSTILE: float(n)},
        )
        runs.append(ReportRun(record, origin=HOSTILE, full=record.to_dict()))
    return runs


def test_records_from_someone_else_never_become_markup_scripts_or_links() -> None:
    runs = hostile_runs()
    page = render(build_report(HOSTILE, runs), [Asset("lib", "1", "var lib = 1;")])
    assert "<script>alert(1)" not in page and "<img" not in page
    parsed = parse(page)
    kinds = [attrs.get("type") for attrs, _ in parsed.scripts]
    assert kinds == [None, "application/json", None, None]  # capture, data, lib, render
    assert parsed.handlers == [] and parsed.srcs == []
    assert all(h.startswith("#run-") for h in parsed.hrefs) and len(parsed.hrefs) == 2
    assert set(parsed.ids) >= {"runs", "run-0", "run-1", "envd-charts", "envd-console"}
    text = "".join(parsed.text)
    assert HOSTILE.replace("\u2028", "") in text.replace("\u2028", "")  # shown, as text
    assert "javascript:alert(0)" in text  # a value, never an href
    [(_, data)] = [(a, t) for a, t in parsed.scripts if a.get("type") == "application/json"]
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in data
    assert not any("alert" in t for a, t in parsed.scripts if a.get("type") is None)
    drawn = json.loads(data)
    assert [c["id"] for c in drawn] == ["chart-param-0", "chart-param-1", "chart-parallel"]
    assert drawn[0]["spec"]["encoding"]["y"]["title"] == HOSTILE  # round-trips intact


def test_json_for_a_script_escapes_what_could_end_or_break_it() -> None:
    text = script_json({"a": "</script><!--&\u2028\u2029"})
    assert text == '{"a": "\\u003c/script\\u003e\\u003c!--\\u0026\\u2028\\u2029"}'
    assert json.loads(text) == {"a": "</script><!--&\u2028\u2029"}


def test_each_run_links_to_its_record_and_names_its_environment(
    three: list[ReportRun],
) -> None:
    page = render(build_report("demo", three), [])
    for r in three:
        anchor = f"run-{r.record.id}"
        assert f'href="#{anchor}"' in page and f'<section id="{anchor}"' in page
        assert f"<code>{r.record.environment_hash}</code>" in page
    assert '<tr class="imported">' in page


def test_the_page_fetches_nothing() -> None:
    page = render(build_report("demo", [run(0, "1"), run(1, "2")]), vendored_assets())
    policy = "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'"
    assert f'content="{policy}' in html.unescape(page)
    parsed = parse(page)
    assert parsed.srcs == [] and all(h.startswith("#") for h in parsed.hrefs)


def test_a_library_that_would_end_its_script_tag_is_refused() -> None:
    with pytest.raises(VerificationError) as refused:
        render(build_report("p", [run(0, "1")]), [Asset("evil", "1", "x = '</SCRIPT>';")])
    assert refused.value.exit_code == 9 and "evil 1" in refused.value.message


def test_the_vendored_libraries_are_the_pinned_releases() -> None:
    folder = Path(__file__).resolve().parents[3] / "cli" / "assets"
    manifest = json.loads((folder / "manifest.json").read_text())
    assets = vendored_assets()
    assert [(a.name, a.version) for a in assets] == [
        ("vega", "6.4.0"),
        ("vega-lite", "6.5.0"),
        ("vega-embed", "7.3.0"),
    ]
    for entry in manifest["assets"]:
        data = (folder / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert (folder / f"LICENSE.{entry['package']}").is_file()


# ------------------------------------------------------------------ the command


class FakeClient:
    def __init__(self, runs: list[pb.RunRecord]) -> None:
        self.runs = runs
        self.requests: list[pb.ListRunsRequest] = []

    def list_runs(self, request: pb.ListRunsRequest) -> pb.ListRunsReply:
        self.requests.append(request)
        return pb.ListRunsReply(runs=self.runs)


def message(n: int, lr: str, accuracy: float, *, imported: bool = False) -> pb.RunRecord:
    return pb.RunRecord(
        id=f"r{n}" + "0" * 14,
        project="demo",
        command=["python", "train.py"],
        started_at=1_700_000_000.0 + n,
        finished=True,
        environment_hash="e" * 64,
        params={"params.yaml": f"lr: {lr}\n"},
        metrics={"accuracy": accuracy},
        imported=imported,
    )


def invoke(client: FakeClient, args: list[str]) -> Any:
    obj = AppContext(_client=client)  # type: ignore[arg-type]
    return CliRunner().invoke(report_cmd, args, obj=obj, catch_exceptions=False)


def test_report_writes_one_page_from_the_daemons_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    client = FakeClient([message(1, "0.5", 0.8), message(2, "0.05", 0.9, imported=True)])
    out = tmp_path / "runs.html"
    result = invoke(client, ["demo", "-o", str(out), "-w", "lr>0", "-n", "7"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (2 runs)" in result.output
    [request] = client.requests
    assert (request.project.ref, list(request.where), request.limit) == ("demo", ["lr>0"], 7)
    page = out.read_text()
    assert "<h1>Runs: demo</h1>" in page and '<tr class="imported">' in page
    assert '"imported": true' in html.unescape(page)  # the whole record, as the daemon sent it
    assert [p.name for p in tmp_path.iterdir()] == ["runs.html"]  # no temporary file left


def test_report_refuses_no_runs_and_an_unknown_metric(tmp_path: Path) -> None:
    out = tmp_path / "x.html"
    with pytest.raises(NotFound) as none:
        invoke(FakeClient([]), ["demo", "-o", str(out)])
    assert "no runs recorded for project demo" in none.value.message
    with pytest.raises(NotFound):
        invoke(FakeClient([message(1, "1", 0.5)]), ["demo", "-o", str(out), "--metric", "f1"])
    assert not out.exists()


def test_report_into_a_missing_folder_is_refused_and_says_how_to_fix_it(tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "runs.html"
    with pytest.raises(EnvdError) as refused:
        invoke(FakeClient([message(1, "1", 0.5)]), ["demo", "-o", str(out)])
    assert refused.value.exit_code == 1 and str(tmp_path / "nowhere") in refused.value.message
    assert "-o PATH" in (refused.value.hint or "")


def test_report_with_json_says_where_and_what(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    client = FakeClient([message(1, "1", 0.5)])
    obj = AppContext(as_json=True, _client=client)  # type: ignore[arg-type]
    result = CliRunner().invoke(report_cmd, ["-o", str(out)], obj=obj, catch_exceptions=False)
    assert json.loads(result.output) == {"output": str(out), "runs": 1, "metric": "accuracy"}
    assert client.requests[0].project.ref == ""  # no PROJECT: every project's runs


def test_report_is_a_subcommand_of_runs() -> None:
    result = CliRunner().invoke(cli, ["runs", "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "report" in result.output
    result = CliRunner().invoke(cli, ["runs", "report", "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "--metric" in result.output
