"""The report's Vega-Lite specs, as plain data (pure).

Names and values from records only ever land in data values and titles, never in a field name,
an expression or a URL: fields are fixed (`run`, `x`, `y`, `axis`, `pos`, ...) and the
parallel-coordinates positions are computed here, so no Vega expression touches a record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cli.report.runs import Report, ReportRun, as_number
from envd.model.runrecord import format_number

Spec = dict[str, Any]
MAX_CATEGORY_LABELS = 12  # a categorical axis with more values labels its ends only


@dataclass(frozen=True)
class Chart:
    id: str  # the page element it is drawn into (generated, never from a record)
    title: str
    spec: Spec


def charts(report: Report) -> list[Chart]:
    """One small chart of the metric per varying param, then the parallel coordinates of the
    varying params and the metrics that vary (and the charted one)."""
    out: list[Chart] = []
    if report.metric:
        for n, param in enumerate(report.params):
            spec = metric_against_param(report.runs, param, report.metric)
            if spec is not None:
                out.append(Chart(f"chart-param-{n}", f"{report.metric} by {param}", spec))
    metrics = [m for m in report.metrics if m in report.varying_metrics or m == report.metric]
    parallel = parallel_coordinates(report.runs, report.params, metrics, report.metric)
    if parallel is not None:
        out.append(Chart("chart-parallel", "parameters and metrics", parallel))
    return out


def metric_against_param(runs: Sequence[ReportRun], param: str, metric: str) -> Spec | None:
    """A scatter of `metric` against `param` (numeric x when every value is a number)."""
    points = [
        (r.record.id[:12], r.record.param_values[param], float(r.record.metrics[metric]))
        for r in runs
        if param in r.record.param_values and metric in r.record.metrics
    ]
    if not points:
        return None
    numeric = all(as_number(x) is not None for _, x, _ in points)
    values = [
        {"run": run_id, "x": as_number(x) if numeric else x, "label": x, "y": y}
        for run_id, x, y in points
    ]
    x_axis: Spec = {"field": "x", "type": "quantitative" if numeric else "nominal", "title": param}
    if numeric:
        x_axis["scale"] = {"zero": False}
    else:
        x_axis["sort"] = sorted({str(v["x"]) for v in values})
    return {
        "width": 220,
        "height": 160,
        "data": {"values": values},
        "mark": {"type": "point", "filled": True, "size": 70},
        "encoding": {
            "x": x_axis,
            "y": {"field": "y", "type": "quantitative", "title": metric, "scale": {"zero": False}},
            "tooltip": [
                {"field": "run", "type": "nominal", "title": "run"},
                {"field": "label", "type": "nominal", "title": param},
                {"field": "y", "type": "quantitative", "title": metric},
            ],
        },
    }


@dataclass(frozen=True)
class Axis:
    title: str
    positions: dict[str, float]  # run id -> 0..1 (runs without a value are absent)
    values: dict[str, str]  # run id -> the value as shown
    ticks: list[tuple[float, str]]  # (position, label)


def axis_of(title: str, values: dict[str, str]) -> Axis:
    """Positions on one axis: numbers scaled to 0..1 between their min and max, anything else
    in sorted order, evenly spaced; one value alone sits in the middle."""
    numbers = {k: as_number(v) for k, v in values.items()}
    if values and all(n is not None for n in numbers.values()):
        lo = min(n for n in numbers.values() if n is not None)
        hi = max(n for n in numbers.values() if n is not None)
        span = hi - lo
        positions = {
            k: ((n - lo) / span if span else 0.5) for k, n in numbers.items() if n is not None
        }
        ticks = (
            [(0.0, format_number(lo)), (1.0, format_number(hi))]
            if span
            else [(0.5, format_number(lo))]
        )
        return Axis(title, positions, values, ticks)
    categories = sorted(set(values.values()))
    step = 1.0 / (len(categories) - 1) if len(categories) > 1 else 0.0
    place = {c: (i * step if len(categories) > 1 else 0.5) for i, c in enumerate(categories)}
    labelled = (
        categories if len(categories) <= MAX_CATEGORY_LABELS else [categories[0], categories[-1]]
    )
    return Axis(
        title,
        {k: place[v] for k, v in values.items()},
        values,
        [(place[c], c) for c in labelled],
    )


def _unique_titles(params: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """Axis titles; a metric named like a param is told apart (titles are the x categories)."""
    titles = list(params)
    taken = set(titles)
    for name in metrics:
        title = name if name not in taken else f"{name} (metric)"
        while title in taken:
            title += "'"
        taken.add(title)
        titles.append(title)
    return titles


def parallel_coordinates(
    runs: Sequence[ReportRun], params: Sequence[str], metrics: Sequence[str], color_by: str
) -> Spec | None:
    """Params then metrics as vertical axes, one line per run, coloured by `color_by`.

    Vega-Lite's parallel-coordinates recipe (fold, joinaggregate min/max, calculate the
    normalised value) scales numbers only; here the positions are computed beforehand so that a
    categorical param (an optimizer's name) gets an axis too, and its labels are its values.
    """
    titles = _unique_titles(params, metrics)
    ids = [r.record.id[:12] for r in runs]
    axes: list[Axis] = []
    for title, name, is_param in zip(
        titles, [*params, *metrics], [True] * len(params) + [False] * len(metrics), strict=True
    ):
        values: dict[str, str] = {}
        for run_id, run in zip(ids, runs, strict=True):
            if is_param and name in run.record.param_values:
                values[run_id] = run.record.param_values[name]
            elif not is_param and name in run.record.metrics:
                values[run_id] = format_number(run.record.metrics[name])
        if values:
            axes.append(axis_of(title, values))
    if len(axes) < 2 or not runs:
        return None
    order = [a.title for a in axes]
    lines: list[dict[str, Any]] = []
    for run_id, run in zip(ids, runs, strict=True):
        shade = run.record.metrics.get(color_by) if color_by else None
        for axis in axes:
            if run_id in axis.positions:
                lines.append(
                    {
                        "run": run_id,
                        "axis": axis.title,
                        "pos": axis.positions[run_id],
                        "value": axis.values[run_id],
                        "shade": shade,
                    }
                )
    ticks = [{"axis": a.title, "pos": pos, "label": label} for a in axes for pos, label in a.ticks]
    x: Spec = {"field": "axis", "type": "nominal", "sort": order, "title": None}
    y: Spec = {"field": "pos", "type": "quantitative", "axis": None, "scale": {"domain": [0, 1]}}
    line_encoding: Spec = {
        "x": x,
        "y": y,
        "detail": {"field": "run", "type": "nominal"},
        "tooltip": [
            {"field": "run", "type": "nominal", "title": "run"},
            {"field": "axis", "type": "nominal", "title": "axis"},
            {"field": "value", "type": "nominal", "title": "value"},
        ],
    }
    if color_by:
        line_encoding["color"] = {"field": "shade", "type": "quantitative", "title": color_by}
    return {
        "width": max(320, 130 * len(axes)),
        "height": 260,
        "layer": [
            {
                "data": {"values": [{"axis": t} for t in order]},
                "mark": {"type": "rule", "color": "#bbb"},
                "encoding": {"x": x},
            },
            {
                "data": {"values": lines},
                "mark": {"type": "line", "strokeWidth": 2, "opacity": 0.8},
                "encoding": line_encoding,
            },
            {
                "data": {"values": lines},
                "mark": {"type": "circle", "size": 30},
                "encoding": {k: v for k, v in line_encoding.items() if k != "detail"},
            },
            {
                "data": {"values": ticks},
                "mark": {"type": "text", "align": "left", "dx": 5, "color": "#555"},
                "encoding": {"x": x, "y": y, "text": {"field": "label", "type": "nominal"}},
            },
        ],
        "config": {
            "axisX": {"domain": False, "labelAngle": 0, "orient": "top"},
            "view": {"stroke": None},
        },
    }
