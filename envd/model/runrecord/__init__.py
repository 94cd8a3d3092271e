"""Run records: what a run read (params, data), what it made (outputs) and how well (metrics).

Pure: text in, values out. The daemon reads the files named in envd.yaml's `runs:` section and
hands their text (params, metrics) or their hashes (data, outputs; see gateways/hashcache) to
this module, which turns them into a typed RunRecord, and from a list of records into the
`envctl runs` table (what varies from run to run), `--where` filters, sorting by a metric,
`runs diff A B` and `trace FILE`.

Digests are lowercase hex sha256. A symlink recorded by the hash cache has the value
`symlink:<target>` instead (a link is recorded as a link, never followed).

    record    RunRecord and CodeState, and the checks their values pass
    parsing   params and metrics files: text in, flat typed values out
    table     the `runs` table, `--where` filters, sorting
    diff      `runs diff A B`
    trace     `trace FILE`
"""

from __future__ import annotations

from envd.model.runrecord.diff import (
    Change,
    ChangeKind,
    diff_runs,
    render_diff,
)
from envd.model.runrecord.parsing import (
    MAX_METRICS,
    MAX_METRICS_BYTES,
    MAX_PARAMS,
    MAX_PARAMS_BYTES,
    Parsed,
    flatten_params,
    flatten_params_files,
    parse_metrics,
)
from envd.model.runrecord.record import (
    GIT_COMMIT_RE,
    SHA256_RE,
    SYMLINK_PREFIX,
    CodeState,
    RunRecord,
    is_digest,
    is_project_subdir,
)
from envd.model.runrecord.table import (
    Op,
    RunsTable,
    Where,
    filter_runs,
    format_number,
    parse_where,
    render_table,
    runs_table,
    sort_runs,
    varying,
)
from envd.model.runrecord.trace import (
    TraceResult,
    imported_mark,
    render_trace,
    trace,
    trace_rank,
)

__all__ = [
    "GIT_COMMIT_RE",
    "MAX_METRICS",
    "MAX_METRICS_BYTES",
    "MAX_PARAMS",
    "MAX_PARAMS_BYTES",
    "SHA256_RE",
    "SYMLINK_PREFIX",
    "Change",
    "ChangeKind",
    "CodeState",
    "Op",
    "Parsed",
    "RunRecord",
    "RunsTable",
    "TraceResult",
    "Where",
    "diff_runs",
    "filter_runs",
    "flatten_params",
    "flatten_params_files",
    "format_number",
    "imported_mark",
    "is_digest",
    "is_project_subdir",
    "parse_metrics",
    "parse_where",
    "render_diff",
    "render_table",
    "render_trace",
    "runs_table",
    "sort_runs",
    "trace",
    "trace_rank",
    "varying",
]
