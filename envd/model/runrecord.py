"""Run records: what a run read (params, data), what it made (outputs) and how well (metrics).

Pure: text in, values out. The daemon reads the files named in envd.yaml's `runs:` section and
hands their text (params, metrics) or their hashes (data, outputs; see gateways/hashcache) to
this module, which turns them into a typed RunRecord, and from a list of records into the
`envctl runs` table (what varies from run to run), `--where` filters, sorting by a metric,
`runs diff A B` and `trace FILE`.

Digests are lowercase hex sha256. A symlink recorded by the hash cache has the value
`symlink:<target>` instead (a link is recorded as a link, never followed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import yaml

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GIT_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
SYMLINK_PREFIX = "symlink:"

MAX_METRICS_BYTES = 1 << 20  # a metrics file over 1 MiB is not read
MAX_METRICS = 1000  # names kept from one metrics file
MAX_PARAMS_BYTES = 1 << 20
MAX_PARAMS = 2000


def is_project_subdir(path: str) -> bool:
    """A relative POSIX path that stays inside the project ("" is its root)."""
    if not path:
        return True
    return not path.startswith("/") and all(p not in ("", ".", "..") for p in path.split("/"))


def is_digest(value: str) -> bool:
    """A file's recorded digest: 64 lowercase hex, or `symlink:<target>` for a link."""
    return bool(SHA256_RE.match(value)) or (
        value.startswith(SYMLINK_PREFIX) and len(value) > len(SYMLINK_PREFIX)
    )


# ------------------------------------------------------------------ the record


@dataclass(frozen=True)
class CodeState:
    """The project's code at the start of a run: commit, dirty flag, sha256 of `git diff HEAD`."""

    commit: str = ""  # "" outside a git repository
    dirty: bool = False
    diff_sha256: str = ""  # "" when clean

    def __post_init__(self) -> None:
        if self.commit and not GIT_COMMIT_RE.match(self.commit):
            raise ValueError(f"git commit {self.commit!r} is not 40 or 64 lowercase hex digits")
        if self.diff_sha256 and not SHA256_RE.match(self.diff_sha256):
            raise ValueError(f"diff sha256 {self.diff_sha256!r} is not 64 lowercase hex digits")
        if self.diff_sha256 and not self.dirty:
            raise ValueError("a clean tree has no diff hash")


@dataclass(frozen=True)
class RunRecord:
    """One run, as `envctl runs`, `runs diff`, `trace` and provenance export see it.

    The first fields mirror the store's RunRow; the rest are what envd.yaml's `runs:` section
    adds: params {file: text}, data {path: sha256}, outputs {path: sha256} (files the run
    created or changed), metrics {name: float}.
    """

    id: str
    project: str = ""
    command: tuple[str, ...] = ()
    started_at: float = 0.0
    ended_at: float = 0.0
    exit_code: int = 0
    image: str = ""  # image id, "sha256:<hex>"
    environment_hash: str = ""
    host_hash: str = ""
    lock_sha256: str = ""
    code: CodeState = field(default_factory=CodeState)
    params: Mapping[str, str] = field(default_factory=dict)
    data: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what was skipped while recording, for the user
    workdir: str = ""  # where in the project it ran: relative POSIX path, "" for the root
    # Where an imported run came from (the statement's file, or "a provenance statement");
    # "" for a run made here. Shown wherever the run is, and ranked after local runs.
    origin: str = ""

    @property
    def imported(self) -> bool:
        return bool(self.origin)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a run needs an id")
        if not is_project_subdir(self.workdir):
            raise ValueError(f"workdir {self.workdir!r} is not a path inside the project")
        for kind, mapping in (("data", self.data), ("outputs", self.outputs)):
            for path, digest in mapping.items():
                if not isinstance(path, str) or not path:
                    raise ValueError(f"{kind}: empty path")
                if not isinstance(digest, str) or not is_digest(digest):
                    raise ValueError(f"{kind}: {path}: {digest!r} is not a sha256 hex digest")
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"metric {name}: {value!r} is not a number")
            if not math.isfinite(value):
                raise ValueError(f"metric {name}: {value!r} is not finite")
        if self.lock_sha256 and not SHA256_RE.match(self.lock_sha256):
            raise ValueError(f"lock sha256 {self.lock_sha256!r} is not 64 lowercase hex digits")

    @cached_property
    def param_values(self) -> dict[str, str]:
        """The params files flattened to dotted keys (see `flatten_params_files`)."""
        return flatten_params_files(self.params)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project": self.project,
            "command": list(self.command),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "exit_code": self.exit_code,
            "image": self.image,
            "environment_hash": self.environment_hash,
            "host_hash": self.host_hash,
            "lock_sha256": self.lock_sha256,
            "code": {
                "commit": self.code.commit,
                "dirty": self.code.dirty,
                "diff_sha256": self.code.diff_sha256,
            },
            "params": dict(sorted(self.params.items())),
            "data": dict(sorted(self.data.items())),
            "outputs": dict(sorted(self.outputs.items())),
            "metrics": {k: float(v) for k, v in sorted(self.metrics.items())},
            "notes": list(self.notes),
            "workdir": self.workdir,
            **({"origin": self.origin} if self.origin else {}),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact, UTF-8): same record, same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunRecord:
        code = raw.get("code") or {}
        return cls(
            id=str(raw["id"]),
            project=str(raw.get("project", "")),
            command=tuple(str(c) for c in raw.get("command", ())),
            started_at=float(raw.get("started_at", 0.0)),
            ended_at=float(raw.get("ended_at", 0.0)),
            exit_code=int(raw.get("exit_code", 0)),
            image=str(raw.get("image", "")),
            environment_hash=str(raw.get("environment_hash", "")),
            host_hash=str(raw.get("host_hash", "")),
            lock_sha256=str(raw.get("lock_sha256", "")),
            code=CodeState(
                commit=str(code.get("commit", "")),
                dirty=bool(code.get("dirty", False)),
                diff_sha256=str(code.get("diff_sha256", "")),
            ),
            params={str(k): str(v) for k, v in (raw.get("params") or {}).items()},
            data={str(k): str(v) for k, v in (raw.get("data") or {}).items()},
            outputs={str(k): str(v) for k, v in (raw.get("outputs") or {}).items()},
            metrics={str(k): float(v) for k, v in (raw.get("metrics") or {}).items()},
            notes=tuple(str(n) for n in raw.get("notes", ())),
            workdir=str(raw.get("workdir", "")),
            origin=str(raw.get("origin", "")),
        )

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("a run record is a JSON object")
        return cls.from_dict(raw)


# ------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Parsed:
    """Values read from one file, and what was skipped (one note each)."""

    values: dict[str, Any]
    notes: tuple[str, ...] = ()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _file_format(name: str) -> Literal["json", "yaml", "csv"]:
    lower = name.lower()
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    return "json"


class _TooMany(Exception):
    pass


def _flatten(value: Any, prefix: str, out: dict[str, Any], lists: bool, limit: int) -> None:
    """Nested mappings as dotted keys; stops (_TooMany) past `limit` keys, so that a YAML
    file of aliases (a "billion laughs") cannot expand without end."""
    if isinstance(value, Mapping):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            _flatten(item, name, out, lists, limit)
    elif lists and isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}" if prefix else str(index), out, lists, limit)
    else:
        if len(out) >= limit:
            raise _TooMany
        out[prefix] = value


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(kind: str, text: str) -> Any:
    """JSON or YAML text; ValueError for bad or too deeply nested text."""
    try:
        # libyaml's parser where PyYAML has it: `runs` parses every run's params files
        return json.loads(text) if kind == "json" else yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0] if str(exc) else "invalid") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_metrics(name: str, text: str, *, max_bytes: int = MAX_METRICS_BYTES) -> Parsed:
    """Metrics {name: float} from a JSON, YAML or CSV file's text (format from the file name).

    JSON/YAML: nested objects are flattened with dots (`{"val": {"acc": 0.9}}` -> `val.acc`).
    CSV: either rows of `name,value` (an optional header whose value cell is not a number), or a
    header row and data rows, of which the last is taken (a training log's final epoch).
    Values that are not finite numbers (strings, booleans, lists, null, NaN) are skipped, with a
    note each. A file over `max_bytes` or with more than MAX_METRICS names is cut, with a note.
    """
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > max_bytes:
        return Parsed({}, (f"{name}: {size} bytes is over the {max_bytes}-byte limit; not read",))
    kind = _file_format(name)
    raw: dict[str, Any] = {}
    notes: list[str] = []
    if kind == "csv":
        raw, notes = _csv_metrics(name, text)
    else:
        try:
            loaded = _load(kind, text)
        except ValueError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return Parsed({}, (f"{name}: not valid {kind.upper()}: {first}",))
        if loaded is None:
            return Parsed({}, (f"{name}: empty",))
        if not isinstance(loaded, Mapping):
            return Parsed({}, (f"{name}: top level is not an object of name: number",))
        try:
            _flatten(loaded, "", raw, lists=False, limit=4 * MAX_METRICS)
        except _TooMany:
            notes.append(f"{name}: more than {4 * MAX_METRICS} values; the rest skipped")
        except RecursionError:
            return Parsed({}, (f"{name}: nested too deeply; not read",))
    metrics: dict[str, float] = {}
    for key, value in raw.items():
        number = _number(value) if kind == "csv" or not isinstance(value, str) else None
        if number is None:
            notes.append(f"{name}: {key}: {_short(value)} is not a number; skipped")
            continue
        if len(metrics) >= MAX_METRICS:
            notes.append(f"{name}: more than {MAX_METRICS} metrics; the rest skipped")
            break
        metrics[key] = number
    return Parsed(metrics, tuple(notes))


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _csv_metrics(name: str, text: str) -> tuple[dict[str, Any], list[str]]:
    dialect: type[csv.Dialect] = csv.excel_tab if name.lower().endswith(".tsv") else csv.excel
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text), dialect)
        if any(cell.strip() for cell in row)
    ]
    if not rows:
        return {}, [f"{name}: empty"]
    pairs = all(len(row) == 2 for row in rows)
    if pairs and all(_number(r[0]) is None for r in rows):
        first = rows[0]
        if _number(first[1]) is not None:  # no header: every row is name,value
            return {r[0]: r[1] for r in rows}, []
        if first[0].lower() in _NAME_HEADERS or first[1].lower() in _VALUE_HEADERS:
            return {r[0]: r[1] for r in rows[1:]}, []
    if len(rows) < 2:
        return {}, [f"{name}: a header row and no data row"]
    return _header_and_last(rows)


_NAME_HEADERS = frozenset({"name", "metric", "key"})
_VALUE_HEADERS = frozenset({"value", "val"})


def _header_and_last(rows: list[list[str]]) -> tuple[dict[str, Any], list[str]]:
    header, last = rows[0], rows[-1]
    notes: list[str] = []
    if len(last) != len(header):
        notes.append(f"last row has {len(last)} cells, header {len(header)}; extra cells skipped")
    return {key: value for key, value in zip(header, last, strict=False) if key}, notes


# ------------------------------------------------------------------ params


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def flatten_params(name: str, text: str, *, max_bytes: int = MAX_PARAMS_BYTES) -> Parsed:
    """A YAML/JSON config as dotted keys -> text (`{"model": {"lr": 0.1}}` -> `model.lr: 0.1`).

    Lists stay whole (rendered as compact JSON); strings are kept as they are, other scalars
    as JSON (`true`, `null`, `0.1`). A file that is not a mapping is kept as one value under
    its own name.
    """
    size = len(text.encode("utf-8", "surrogateescape"))
    if size > max_bytes:
        return Parsed({}, (f"{name}: {size} bytes is over the {max_bytes}-byte limit; not read",))
    kind = _file_format(name)
    try:
        loaded = _load(kind, text)
    except ValueError:
        return Parsed({name: text.strip()}, (f"{name}: not {kind.upper()}; kept as text",))
    if not isinstance(loaded, Mapping):
        return Parsed({name: _scalar_text(loaded)} if loaded is not None else {})
    raw: dict[str, Any] = {}
    notes: list[str] = []
    try:
        _flatten(loaded, "", raw, lists=False, limit=MAX_PARAMS)
    except _TooMany:
        notes.append(f"{name}: more than {MAX_PARAMS} params; the rest skipped")
    except RecursionError:
        return Parsed({}, (f"{name}: nested too deeply; not read",))
    try:
        values = {k: _scalar_text(v) for k, v in raw.items()}
    except RecursionError:
        return Parsed({}, (f"{name}: nested too deeply; not read",))
    return Parsed(values, tuple(notes))


def flatten_params_files(files: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """All params files of a run as one {key: text}: plain keys for one file, else `file:key`."""
    out: dict[str, str] = {}
    notes: list[str] = []
    several = len(files) > 1
    for file_name in sorted(files):
        parsed = flatten_params(file_name, files[file_name])
        notes.extend(parsed.notes)
        for key, value in parsed.values.items():
            out[f"{file_name}:{key}" if several else key] = str(value)
    return out, tuple(notes)


# ------------------------------------------------------------------ table


def format_number(value: float) -> str:
    """A metric for a table cell: up to 6 significant digits, integers without a point."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


@dataclass(frozen=True)
class RunsTable:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    param_columns: tuple[str, ...] = ()
    metric_columns: tuple[str, ...] = ()


def varying(runs: Sequence[RunRecord]) -> tuple[list[str], list[str]]:
    """The params and metrics whose values differ between runs (missing counts as a value).

    With fewer than two runs nothing varies, so every column is shown.
    """
    params = [r.param_values for r in runs]
    param_keys = sorted({k for p in params for k in p})
    metric_keys = sorted({k for r in runs for k in r.metrics})
    if len(runs) < 2:
        return param_keys, metric_keys
    varying_params = [k for k in param_keys if len({p.get(k) for p in params}) > 1]
    varying_metrics = [k for k in metric_keys if len({r.metrics.get(k) for r in runs}) > 1]
    return varying_params, varying_metrics


def runs_table(
    runs: Sequence[RunRecord],
    *,
    all_columns: bool = False,
    id_width: int = 12,
) -> RunsTable:
    """One row per run: id, exit status, then the params and metrics that vary."""
    if all_columns:
        param_cols = sorted({k for r in runs for k in r.param_values})
        metric_cols = sorted({k for r in runs for k in r.metrics})
    else:
        param_cols, metric_cols = varying(runs)
    headers = ("run", "exit", *param_cols, *metric_cols)
    rows = []
    for run in runs:
        values = run.param_values
        rows.append(
            (
                run.id[:id_width],
                str(run.exit_code),
                *(values.get(k, "") for k in param_cols),
                *(format_number(run.metrics[k]) if k in run.metrics else "" for k in metric_cols),
            )
        )
    return RunsTable(headers, tuple(rows), tuple(param_cols), tuple(metric_cols))


def _truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


def _is_numeric(text: str) -> bool:
    return _number(text) is not None


def render_table(table: RunsTable, *, width: int = 80, min_column: int = 6, gap: int = 2) -> str:
    """Plain-text columns that fit in `width` characters.

    Wide columns are shortened (with `…`) down to `min_column`; if that is not enough, the
    rightmost columns are left out and the last line says how many. Numbers align right.
    """
    headers = list(table.headers)
    if not headers:
        return ""
    rows = [[c.replace("\n", " ") for c in row] for row in table.rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def total(ws: list[int]) -> int:
        return sum(ws) + gap * (len(ws) - 1)

    while total(widths) > width:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= min_column:
            break
        widths[widest] = max(min_column, widths[widest] - (total(widths) - width))
    dropped = 0
    while total(widths) > width and len(widths) > 1:
        widths.pop()
        dropped += 1
    shown = len(widths)
    numeric = [
        bool(rows) and all(_is_numeric(r[i]) or r[i] == "" for r in rows) for i in range(shown)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i in range(shown):
            cell = _truncate(cells[i], widths[i])
            parts.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        return (" " * gap).join(parts).rstrip()

    out = [line(headers)] + [line(r) for r in rows]
    if dropped:
        out.append(f"(+{dropped} more column{'s' if dropped > 1 else ''}: widen the terminal)")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ filter and sort

_WHERE_RE = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(==|=|!=|<=|>=|<|>)\s*(.*?)\s*$")
Op = Literal["=", "!=", "<", "<=", ">", ">="]


@dataclass(frozen=True)
class Where:
    """A `--where KEY OP VALUE` filter on a param or a metric."""

    key: str
    op: Op
    value: str

    def matches(self, run: RunRecord) -> bool:
        actual: str | None
        if self.key in run.metrics:
            actual = format_number(run.metrics[self.key])
            actual_number: float | None = run.metrics[self.key]
        else:
            actual = run.param_values.get(self.key)
            actual_number = _number(actual) if actual is not None else None
        if actual is None:
            return self.op == "!="
        wanted = _number(self.value)
        if self.op in ("=", "!="):
            if actual_number is not None and wanted is not None:
                equal = actual_number == wanted
            else:
                equal = actual == self.value
            return equal if self.op == "=" else not equal
        if actual_number is None or wanted is None:
            return False
        return {
            "<": actual_number < wanted,
            "<=": actual_number <= wanted,
            ">": actual_number > wanted,
            ">=": actual_number >= wanted,
        }[self.op]


def parse_where(expression: str) -> Where:
    """`lr=0.1`, `model.depth!=3`, `accuracy>=0.9` (numbers compare as numbers)."""
    match = _WHERE_RE.match(expression)
    if not match:
        raise ValueError(f"--where {expression!r}: expected KEY=VALUE (or !=, <, <=, >, >=)")
    key, op, value = match.groups()
    op = "=" if op == "==" else op
    if op in ("<", "<=", ">", ">=") and _number(value) is None:
        raise ValueError(f"--where {expression!r}: {op} needs a number")
    return Where(key, op, value)  # type: ignore[arg-type]


def filter_runs(runs: Iterable[RunRecord], wheres: Sequence[Where]) -> list[RunRecord]:
    return [run for run in runs if all(w.matches(run) for w in wheres)]


def sort_runs(runs: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Sort by a metric, ascending; `-name` for descending. Runs without it go last."""
    descending = key.startswith("-")
    name = key.lstrip("-+")
    runs = list(runs)
    have = [r for r in runs if name in r.metrics]
    missing = [r for r in runs if name not in r.metrics]
    have.sort(key=lambda r: r.metrics[name], reverse=descending)
    return have + missing


# ------------------------------------------------------------------ diff

ChangeKind = Literal[
    "command", "exit", "param", "metric", "data", "output", "code", "environment", "host", "lock"
]


@dataclass(frozen=True)
class Change:
    """One difference between two runs; `before`/`after` are None where a side lacks it."""

    kind: ChangeKind
    name: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        if self.before is None:
            return f"{self.kind} {self.name}: added {self.after}"
        if self.after is None:
            return f"{self.kind} {self.name}: removed (was {self.before})"
        return f"{self.kind} {self.name}: {self.before} -> {self.after}"


def _mapping_changes(kind: ChangeKind, a: Mapping[str, str], b: Mapping[str, str]) -> list[Change]:
    return [
        Change(kind, key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def diff_runs(a: RunRecord, b: RunRecord) -> list[Change]:
    """Everything that differs between run `a` and run `b`, in a fixed order."""
    changes: list[Change] = []
    if a.command != b.command:
        changes.append(Change("command", "command", " ".join(a.command), " ".join(b.command)))
    if a.exit_code != b.exit_code:
        changes.append(Change("exit", "exit code", str(a.exit_code), str(b.exit_code)))
    changes += _mapping_changes("param", a.param_values, b.param_values)
    changes += _mapping_changes(
        "metric",
        {k: format_number(v) for k, v in a.metrics.items()},
        {k: format_number(v) for k, v in b.metrics.items()},
    )
    changes += _mapping_changes("data", a.data, b.data)
    changes += _mapping_changes("output", a.outputs, b.outputs)
    if a.code.commit != b.code.commit:
        changes.append(Change("code", "commit", a.code.commit or None, b.code.commit or None))
    if a.code.dirty != b.code.dirty:
        changes.append(Change("code", "dirty", str(a.code.dirty), str(b.code.dirty)))
    if a.code.diff_sha256 != b.code.diff_sha256:
        changes.append(
            Change("code", "diff", a.code.diff_sha256 or None, b.code.diff_sha256 or None)
        )
    for kind, name, before, after in (
        ("environment", "environment hash", a.environment_hash, b.environment_hash),
        ("environment", "image", a.image, b.image),
        ("host", "host hash", a.host_hash, b.host_hash),
        ("lock", "envd.lock sha256", a.lock_sha256, b.lock_sha256),
    ):
        if before != after:
            changes.append(Change(kind, name, before or None, after or None))  # type: ignore[arg-type]
    return changes


def render_diff(a: RunRecord, b: RunRecord, changes: Sequence[Change]) -> str:
    if not changes:
        return f"runs {a.id} and {b.id}: no differences\n"
    lines = [f"runs {a.id} -> {b.id}: {len(changes)} change{'s' if len(changes) > 1 else ''}"]
    lines += [f"  {c.describe()}" for c in changes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ trace


@dataclass(frozen=True)
class TraceResult:
    """Which runs produced a file: `exact` wrote these bytes at this path (newest first),
    `same_content` wrote these bytes elsewhere, `overwritten` wrote this path with other bytes
    (the file changed after them)."""

    exact: tuple[RunRecord, ...]
    same_content: tuple[tuple[RunRecord, str], ...]
    overwritten: tuple[RunRecord, ...]

    @property
    def producer(self) -> RunRecord | None:
        return self.exact[0] if self.exact else None


def trace_rank(now: float) -> Callable[[RunRecord], tuple[bool, bool, float, str]]:
    """The order `trace` lists runs in (reversed): runs made here before imported ones, a
    run dated after `now` after every other, then the newest first."""

    def rank(run: RunRecord) -> tuple[bool, bool, float, str]:
        return (not run.imported, run.ended_at <= now, run.ended_at, run.id)

    return rank


def trace(
    path: str, sha256: str, runs: Iterable[RunRecord], *, now: float = math.inf
) -> TraceResult:
    """Find the runs behind the file `path` (project-relative) whose content is `sha256`.

    Each list is in `trace_rank` order: the producer is the newest run made here, an
    imported run only when no local one wrote these bytes, and never a run dated after
    `now` while another is there."""
    exact: list[RunRecord] = []
    same: list[tuple[RunRecord, str]] = []
    overwritten: list[RunRecord] = []
    for run in sorted(runs, key=trace_rank(now), reverse=True):
        recorded = run.outputs.get(path)
        if recorded == sha256:
            exact.append(run)
        elif recorded is not None:
            overwritten.append(run)
        else:
            for other, digest in sorted(run.outputs.items()):
                if digest == sha256:
                    same.append((run, other))
                    break
    return TraceResult(tuple(exact), tuple(same), tuple(overwritten))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def imported_mark(run: RunRecord) -> str:
    """` (imported from ORIGIN)` for an imported run, "" for one made here."""
    return f" (imported from {run.origin})" if run.imported else ""


def render_trace(path: str, sha256: str, result: TraceResult) -> str:
    """`envctl trace FILE`: the run behind these bytes, and everything it ran with."""
    run = result.producer
    lines: list[str] = []
    if run is None:
        lines.append(f"{path} (sha256 {sha256[:12]}): no recorded run wrote these bytes")
        if result.overwritten:
            ids = ", ".join(r.id + imported_mark(r) for r in result.overwritten)
            lines.append(f"  changed since it was written by: {ids}")
        for other, other_path in result.same_content:
            lines.append(
                f"  the same bytes were written as {other_path} by run {other.id}"
                + imported_mark(other)
            )
        return "\n".join(lines) + "\n"
    code = run.code
    commit = code.commit[:12] if code.commit else "(no git repository)"
    if code.dirty:
        commit += f" + uncommitted changes (diff sha256 {code.diff_sha256[:12]})"
    lines += [
        f"{path} (sha256 {sha256[:12]}) was written by run {run.id}{imported_mark(run)}",
        f"  command:      {' '.join(run.command)}  (exit {run.exit_code})",
        f"  when:         {_when(run.started_at)} - {_when(run.ended_at)}",
        f"  environment:  {run.environment_hash or '-'}  image {run.image or '-'}",
        f"  host:         {run.host_hash or '-'}",
        f"  lock:         {run.lock_sha256 or '-'}",
        f"  code:         {commit}",
    ]
    for name in sorted(run.params):
        lines.append(f"  params:       {name}")
    for key, value in run.param_values.items():
        lines.append(f"    {key} = {value}")
    for data_path, digest in sorted(run.data.items()):
        lines.append(f"  data:         {data_path}  {digest[:12]}")
    for name, number in sorted(run.metrics.items()):
        lines.append(f"  metric:       {name} = {format_number(number)}")
    if len(result.exact) > 1:
        others = ", ".join(r.id + imported_mark(r) for r in result.exact[1:])
        lines.append(f"  also written, with the same bytes, by: {others}")
    return "\n".join(lines) + "\n"
