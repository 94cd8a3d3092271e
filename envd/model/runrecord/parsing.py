"""Params and metrics files (JSON, YAML, CSV) as text in, flat typed values out, bounded."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

MAX_METRICS_BYTES = 1 << 20  # a metrics file over 1 MiB is not read
MAX_METRICS = 1000  # names kept from one metrics file
MAX_PARAMS_BYTES = 1 << 20
MAX_PARAMS = 2000


# ------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Parsed:
    """Values read from one file, and what was skipped (one note each)."""

    values: dict[str, Any]
    notes: tuple[str, ...] = ()


def as_number(value: Any) -> float | None:
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
        number = as_number(value) if kind == "csv" or not isinstance(value, str) else None
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
    if pairs and all(as_number(r[0]) is None for r in rows):
        first = rows[0]
        if as_number(first[1]) is not None:  # no header: every row is name,value
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
