"""The report as one self-contained HTML page: Vega, Vega-Lite and vega-embed inlined, no network.

Everything from a record is untrusted (runs may be imported from colleagues): table text and
records are HTML-escaped, JSON inside <script> has `<`, `>`, `&`, U+2028 and U+2029 escaped, no
record value becomes markup, an attribute other than an escaped anchor id, or a URL; a
Content-Security-Policy forbids every fetch, so the page works, and stays, offline.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cli.report.charts import Chart, charts
from cli.report.runs import Report
from envd.errors import VerificationError

_SCRIPT_END = re.compile(r"</script|<!--", re.IGNORECASE)
_JSON_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'"
)  # Vega compiles its expressions with Function(): hence 'unsafe-eval'


@dataclass(frozen=True)
class Asset:
    name: str
    version: str
    text: str


def vendored_assets() -> list[Asset]:
    """The chart libraries in cli/assets/, in load order, each checked against the manifest."""
    folder = resources.files("cli.assets")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    out = []
    for entry in manifest["assets"]:
        data = (folder / entry["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise VerificationError(
                f"cli/assets/{entry['file']}: its sha256 is not the one in the assets' manifest",
                hint="the installed envd is damaged or was changed: reinstall it",
            )
        out.append(Asset(entry["package"], entry["version"], data.decode("utf-8")))
    return out


def script_json(value: Any) -> str:
    """JSON that can sit inside <script> whatever strings it holds."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    return "".join(_JSON_ESCAPES.get(c, c) for c in text)


def record_json(full: Mapping[str, Any]) -> str:
    """A run's whole record, readable and HTML-escaped, for a <pre>."""
    return html.escape(json.dumps(full, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def render(report: Report, assets: Sequence[Asset], *, generator: str = "envctl") -> str:
    """The page. `assets` are inlined as they are (see `vendored_assets`)."""
    e = html.escape
    drawn = charts(report)
    libraries = []
    for asset in assets:
        if _SCRIPT_END.search(asset.text):
            raise VerificationError(
                f"{asset.name} {asset.version} holds `</script` or `<!--`: it cannot be inlined",
                hint="vendor a build without it (see cli/assets/README.md)",
            )
        libraries.append(
            f"<script>/* {e(asset.name)} {e(asset.version)} */\n{asset.text}\n</script>"
        )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>runs: {e(report.title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        '<pre id="envd-console" class="console" hidden></pre>',
        f"<script>{_CAPTURE}</script>",
        f"<h1>Runs: {e(report.title)}</h1>",
        f'<p class="meta">{len(report.runs)} run{"s" if len(report.runs) != 1 else ""}; '
        f"written by {e(generator)}; charts by "
        + ", ".join(f"{e(a.name)} {e(a.version)}" for a in assets)
        + ".</p>",
        "<h2>Runs</h2>",
        _table(report),
        *_chart_sections(report, drawn),
        "<h2>Records</h2>",
        *_records(report),
        '<script type="application/json" id="envd-charts">',
        script_json(_chart_data(drawn)),
        "</script>",
        *libraries,
        f"<script>{_RENDER}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _table(report: Report) -> str:
    e = html.escape
    params = set(range(5, 5 + len(report.params)))
    metrics = set(range(5 + len(report.params), 5 + len(report.params) + len(report.metrics)))
    head = "".join(
        f'<th class="{"param" if i in params else "metric" if i in metrics else "col"}">{e(h)}</th>'
        for i, h in enumerate(report.headers)
    )
    rows = []
    for anchor, row, run in zip(report.anchors, report.rows, report.runs, strict=True):
        cells = [f'<td><a href="#{e(anchor)}" title="{e(run.record.id)}">{e(row[0])}</a></td>']
        for i, cell in enumerate(row[1:], start=1):
            cls = "num" if i in metrics else "when" if i == 1 else ""
            cls = "origin" if i == len(row) - 1 and cell else cls
            cells.append(f'<td class="{cls}">{e(cell)}</td>' if cls else f"<td>{e(cell)}</td>")
        marker = ' class="imported"' if run.origin else ""
        rows.append(f"<tr{marker}>{''.join(cells)}</tr>")
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _chart_sections(report: Report, drawn: Sequence[Chart]) -> list[str]:
    e = html.escape
    out = []
    by_param = [c for c in drawn if c.id.startswith("chart-param-")]
    if not report.metric:
        out.append("<h2>Metrics</h2><p>No run recorded a metric.</p>")
    else:
        out.append(f"<h2>{e(report.metric)} against each parameter that varies</h2>")
        if by_param:
            out.append('<div class="charts">')
            out.extend(
                f"<figure><figcaption>{e(c.title)}</figcaption>"
                f'<div id="{c.id}" class="chart"></div></figure>'
                for c in by_param
            )
            out.append("</div>")
        else:
            out.append("<p>No parameter varies between these runs.</p>")
    if any(c.id == "chart-parallel" for c in drawn):
        out.append("<h2>Parameters → metrics</h2>")
        out.append('<div id="chart-parallel" class="chart"></div>')
    return out


def _records(report: Report) -> list[str]:
    e = html.escape
    out = []
    for anchor, run in zip(report.anchors, report.runs, strict=True):
        r = run.record
        origin = f' <span class="origin">{e(run.origin)}</span>' if run.origin else ""
        out.append(
            f'<section id="{e(anchor)}" class="record"><h3>run {e(r.id)}{origin}</h3>'
            f"<p>environment <code>{e(r.environment_hash or '-')}</code>"
            f" · image <code>{e(r.image or '-')}</code></p>"
            f"<pre>{record_json(run.full or r.to_dict())}</pre></section>"
        )
    return out


def _chart_data(drawn: Sequence[Chart]) -> list[dict[str, Any]]:
    return [{"id": c.id, "spec": c.spec} for c in drawn]


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th.param{background:#eef4ff}th.metric{background:#eefbea}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.when{white-space:nowrap}
tr.imported td,span.origin,td.origin{color:#8a4b00}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}
figcaption{font-size:12px;color:#555}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em}
.console{background:#fee;color:#900}
.meta{color:#666}
"""

# Records what the page hits (errors, warnings, CSP blocks) where a reader and a test see it.
_CAPTURE = """
(function () {
  var out = document.getElementById("envd-console");
  function note(kind, args) {
    var words = [];
    for (var i = 0; i < args.length; i++) {
      var a = args[i];
      try { words.push(a && a.message ? a.message : String(a)); } catch (err) { words.push("?"); }
    }
    out.textContent += kind + ": " + words.join(" ") + "\\n";
    if (kind === "error") { out.hidden = false; }
  }
  window.envdNote = note;
  window.addEventListener("error", function (ev) { note("error", [ev.message]); });
  window.addEventListener("unhandledrejection", function (ev) { note("error", [ev.reason]); });
  document.addEventListener("securitypolicyviolation", function (ev) {
    note("error", ["blocked by the page's policy: " + ev.blockedURI]);
  });
  var error = console.error, warn = console.warn;
  console.error = function () { note("error", arguments); error.apply(console, arguments); };
  console.warn = function () { note("warning", arguments); warn.apply(console, arguments); };
})();
"""

_RENDER = """
(function () {
  var charts = JSON.parse(document.getElementById("envd-charts").textContent);
  var options = {
    mode: "vega-lite", renderer: "svg",
    actions: {export: true, source: false, compiled: false, editor: false}
  };
  var drawing = charts.map(function (c) {
    return vegaEmbed(document.getElementById(c.id), c.spec, options);
  });
  Promise.all(drawing).then(function () {
    document.body.setAttribute("data-charts-drawn", String(drawing.length));
  }, function (err) {
    window.envdNote("error", [err]);
    document.body.setAttribute("data-charts-drawn", "failed");
  });
})();
"""
