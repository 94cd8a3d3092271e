"""Run records: every `envctl enter P -- CMD`, its exit status and what it ran on.

With a `runs:` section in envd.yaml a run also records what it read and made. At the start
(on the enter path, so only cheap work): the params files' text and the stat data of the
declared outputs. Beside the command, in a thread: the data's content hashes (a stat cache
makes an unchanged data set one lstat per file), envd.lock's sha256 and the uncommitted diff.
After the exit status is recorded, in another thread: which outputs the run created or
changed (hashed), and its metrics. `details()` waits for those threads, bounded.

Every run's provenance (environment and host hashes, git commit and dirty state) is filled in
by a thread its caller starts beside the command (`fill_provenance`), so `git status` never
delays its start; `finish` does not wait for it either (Entering does, before it answers the
exit status). Whoever reads a run (get, list, records, record) waits for it first, bounded,
and starts it if nobody has.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from envd.errors import NotFound, UsageError
from envd.gateways.git import commit_and_dirty, uncommitted_diff
from envd.gateways.hashcache import HashCache, StatKey, touched
from envd.gateways.keptfiles import KeptFiles
from envd.gateways.projectfiles import LOCK_MAX_BYTES, read_run_file
from envd.gateways.store import RunDetailsRow, RunRow, Store
from envd.model.provenance import record_from_statement
from envd.model.runrecord import (
    MAX_PARAMS_BYTES,
    SHA256_RE,
    Change,
    CodeState,
    RunRecord,
    TraceResult,
    diff_runs,
    filter_runs,
    parse_metrics,
    parse_where,
    sort_runs,
    trace,
)
from envd.model.spec import LOCK_FILENAME
from envd.model.spec import Runs as RunsSpec
from envd.services.runrows import (
    IMPORTED_NOTE,
    STATEMENT,
    empty_details,
    origin_name,
    origin_of,
    status_matches,
)

log = logging.getLogger(__name__)

DETAILS_WAIT_S = 300.0  # how long `runs show`, `trace` and `rerun` wait for a run's hashes
PROVENANCE_WAIT_S = 30.0  # how long a reader waits for a run's commit and hashes
MAX_METRICS_READ = 1 << 20

Records = list[RunRecord]  # aliases: Runs.list shadows `list` inside the class
Changes = list[Change]
Strings = list[str]

# Called with each finished run's record (e.g. the MLflow bridge); errors are logged only.
RunSink = Callable[[RunRecord], None]
# A run's (environment hash, host hash, git commit, git dirty), computed off the hot path.
ProvenanceFill = Callable[[], tuple[str, str, str, bool]]


@dataclass
class _Provenance:
    fill: ProvenanceFill
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Pending:
    project_dir: str
    spec: RunsSpec
    before: dict[str, StatKey] = field(default_factory=dict)
    details: RunDetailsRow | None = None
    started: threading.Thread | None = None
    finished: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    outputs_read: threading.Event = field(default_factory=threading.Event)
    late_data: tuple[str, ...] = ()


def _read_text(project_dir: str, rel: str, limit: int) -> str | None:
    """A params or metrics file's text, at most `limit` bytes; None when it is missing, over
    the limit, or not a regular file inside the project (code in the container can write it)."""
    raw = read_run_file(project_dir, rel, limit)
    return None if raw is None else raw.decode("utf-8", "replace")


def _sha256_file(project_dir: str, rel: str) -> str:
    raw = read_run_file(project_dir, rel, LOCK_MAX_BYTES)
    return "" if raw is None else hashlib.sha256(raw).hexdigest()


def has_runs_section(spec: RunsSpec | None) -> bool:
    return spec is not None and bool(spec.params or spec.data or spec.outputs or spec.metrics)


class Runs:
    def __init__(
        self,
        store: Store,
        hashes: HashCache | None = None,
        sinks: Iterable[RunSink] = (),
        wait_s: float = DETAILS_WAIT_S,
        kept: KeptFiles | None = None,
    ) -> None:
        self._store = store
        self._hashes = hashes
        self._kept = kept  # outputs and data kept by content, so old runs stay shareable
        self._sinks = tuple(sinks)
        self._wait_s = wait_s
        self._pending: dict[str, _Pending] = {}
        self._provenance: dict[str, _Provenance] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ recording

    def start(
        self,
        run: RunRow,
        spec: RunsSpec | None = None,
        project_dir: str = "",
        image_id: str = "",
        provenance: ProvenanceFill | None = None,
    ) -> None:
        """Record a run's start. Its `provenance` is computed once fill_provenance(run.id) is
        called (or a reader needs it); readers of the run wait for it."""
        self._store.start_run(run)
        if provenance is not None:
            with self._lock:
                self._provenance[run.id] = _Provenance(provenance)
        if self._hashes is None or not has_runs_section(spec) or not project_dir:
            return
        assert spec is not None
        try:
            self._start_details(run, spec, project_dir, image_id)
        except Exception:  # a run without its details, never a failed enter
            log.warning("run %s: details not recorded", run.id, exc_info=True)

    def _start_details(self, run: RunRow, spec: RunsSpec, project_dir: str, image_id: str) -> None:
        assert self._hashes is not None
        # A previous run of this project whose outputs are still being hashed: let it finish
        # first, or it would read what this run writes (back-to-back runs).
        with self._lock:
            earlier = [
                p
                for p in self._pending.values()
                if p.project_dir == project_dir and p.finished is not None
            ]
        for previous in earlier:
            previous.outputs_read.wait(self._wait_s)
        pending = _Pending(project_dir, spec)
        pending.late_data = tuple(
            d for d in spec.data if not os.path.lexists(os.path.join(project_dir, d))
        )
        details = empty_details(run.id, image_id)
        notes: list[str] = []
        params: dict[str, str] = {}
        for rel in spec.params:
            text = _read_text(project_dir, rel, MAX_PARAMS_BYTES)
            if text is None:
                notes.append(f"params {rel}: missing, unreadable or over {MAX_PARAMS_BYTES} bytes")
            else:
                params[rel] = text
        try:
            pending.before = self._hashes.stat_snapshot(project_dir, spec.outputs)
        except (OSError, ValueError) as exc:
            notes.append(f"outputs: not snapshotted at the start: {exc}")
        pending.details = replace(details, params=params, notes=tuple(notes))
        self._store.put_run_details(pending.details)
        pending.started = threading.Thread(
            target=self._record_inputs, args=(run.id, pending), daemon=True, name=f"in-{run.id}"
        )
        with self._lock:
            self._pending[run.id] = pending
        pending.started.start()

    def _record_inputs(self, run_id: str, pending: _Pending) -> None:
        """Beside the command: data hashes, envd.lock's sha256, the uncommitted diff."""
        assert self._hashes is not None and pending.details is not None
        notes = list(pending.details.notes)
        data: dict[str, str] = {}
        try:
            present = [d for d in pending.spec.data if d not in pending.late_data]
            data = self._hashes.snapshot(pending.project_dir, present)
        except (OSError, ValueError) as exc:
            notes.append(f"data: not hashed: {exc}")
        notes += self._keep(pending.project_dir, data, "data")
        lock_sha = _sha256_file(pending.project_dir, LOCK_FILENAME)
        diff, diff_sha, cut = uncommitted_diff(pending.project_dir)
        if cut:
            notes.append(f"the uncommitted diff is cut to {len(diff)} characters (sha256 is all)")
        pending.details = replace(
            pending.details,
            data=data,
            lock_sha256=lock_sha,
            diff=diff,
            diff_sha256=diff_sha,
            notes=tuple(notes),
        )
        try:
            self._store.put_run_details(pending.details)
        except Exception:
            log.warning("run %s: inputs not recorded", run_id, exc_info=True)

    def _keep(self, project_dir: str, files: dict[str, str], what: str) -> list[str]:
        if self._kept is None or not files:
            return []
        try:
            missed = self._kept.keep(project_dir, files)
        except Exception:  # a run without kept files, never a lost record
            log.warning("%s not kept", what, exc_info=True)
            return [f"{what}: not kept for sharing"]
        return [f"{what} {rel}: changed before envd could keep it" for rel in missed]

    def set_provenance(
        self, run_id: str, environment_hash: str, host_hash: str, commit: str, dirty: bool
    ) -> None:
        self._store.set_run_provenance(run_id, environment_hash, host_hash, commit, dirty)

    def fill_provenance(self, run_id: str) -> None:
        """Start computing a run's provenance, in a thread (the first call only)."""
        with self._lock:
            pending = self._provenance.get(run_id)
            if pending is None or pending.started:
                return
            pending.started = True
        threading.Thread(
            target=self._fill, args=(run_id, pending), daemon=True, name=f"run-{run_id}"
        ).start()

    def _fill(self, run_id: str, pending: _Provenance) -> None:
        try:
            self.set_provenance(run_id, *pending.fill())
        except Exception:  # e.g. the daemon closing its store: the run stays, without these
            log.warning("run %s: provenance not recorded", run_id, exc_info=True)
        finally:
            with self._lock:
                self._provenance.pop(run_id, None)
            pending.done.set()

    def wait_provenance(
        self, run_id: str | None = None, timeout: float = PROVENANCE_WAIT_S
    ) -> None:
        """Wait (bounded) until a run's (or every run's) provenance is stored; one whose
        caller has not started it yet is started now (a reader never waits for nothing)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            items = [(r, p) for r, p in self._provenance.items() if run_id in (None, r)]
        for r, pending in items:
            self.fill_provenance(r)
            pending.done.wait(max(0.0, deadline - time.monotonic()))

    def finish(self, run_id: str, exit_code: int) -> RunRow:
        run = self._store.finish_run(run_id, exit_code)
        if run is None:
            raise NotFound(f"no run {run_id}", hint="`envctl runs` lists them")
        with self._lock:
            pending = self._pending.get(run.id)
        if pending is not None and pending.finished is None:
            # The exit status is stored; the outputs are hashed after the caller has it.
            pending.finished = threading.Thread(
                target=self._record_outputs,
                args=(run.id, pending),
                daemon=True,
                name=f"out-{run.id}",
            )
            pending.finished.start()
        elif pending is None and self._sinks:
            threading.Thread(
                target=self._publish, args=(run.id,), daemon=True, name=f"sink-{run.id}"
            ).start()
        return run

    def _record_outputs(self, run_id: str, pending: _Pending) -> None:
        """After the run: its outputs and metrics first (the project's next run waits for
        these only), then, once the inputs' thread is done, the whole record."""
        assert self._hashes is not None
        try:
            notes: list[str] = []
            outputs: dict[str, str] = {}
            try:
                after = self._hashes.stat_snapshot(pending.project_dir, pending.spec.outputs)
                outputs = self._hashes.hash_paths(
                    pending.project_dir, touched(pending.before, after)
                )
            except (OSError, ValueError) as exc:
                notes.append(f"outputs: not hashed: {exc}")
            made: dict[str, str] = {}
            if pending.late_data:
                try:
                    made = self._hashes.snapshot(pending.project_dir, pending.late_data)
                except (OSError, ValueError) as exc:
                    notes.append(f"data: not hashed: {exc}")
                notes += [
                    f"data {d}: made by this run (hashed at its end)" for d in pending.late_data
                ]
            metrics: dict[str, float] = {}
            several = len(pending.spec.metrics) > 1
            for rel in pending.spec.metrics:
                text = _read_text(pending.project_dir, rel, MAX_METRICS_READ)
                if text is None:
                    notes.append(
                        f"metrics {rel}: missing, unreadable or over {MAX_METRICS_READ} bytes"
                    )
                    continue
                parsed = parse_metrics(rel, text)
                notes += parsed.notes
                for name, value in parsed.values.items():
                    metrics[f"{rel}:{name}" if several else name] = float(value)
            # Kept before the project's next run may start: it could overwrite them.
            notes += self._keep(pending.project_dir, {**outputs, **made}, "outputs")
            pending.outputs_read.set()
            if pending.started is not None:
                pending.started.join()
            assert pending.details is not None
            pending.details = replace(
                pending.details,
                data={**pending.details.data, **made},
                outputs=outputs,
                metrics=metrics,
                notes=(*pending.details.notes, *notes),
                state="done",
            )
            self._store.put_run_details(pending.details)
        except Exception:
            log.warning("run %s: outputs not recorded", run_id, exc_info=True)
        finally:
            pending.outputs_read.set()
            pending.done.set()
            with self._lock:
                self._pending.pop(run_id, None)
        self._publish(run_id)

    def _publish(self, run_id: str) -> None:
        if not self._sinks:
            return
        try:
            record = self.record(run_id)
        except Exception:
            log.warning("run %s: no record for the sinks", run_id, exc_info=True)
            return
        for sink in self._sinks:
            try:
                sink(record)
            except Exception:
                log.warning("run %s: a run sink failed", run_id, exc_info=True)

    def wait(self, run_id: str | None = None, timeout: float | None = None) -> None:
        """Wait (bounded) until a run's (or every pending run's) details are recorded.

        A run still executing has nothing to wait for yet: only finished runs are waited on.
        """
        deadline = time.monotonic() + (self._wait_s if timeout is None else timeout)
        self.wait_provenance(run_id, min(PROVENANCE_WAIT_S, deadline - time.monotonic()))
        with self._lock:
            items = [(r, p) for r, p in self._pending.items() if run_id in (None, r)]
        for _, pending in items:
            if pending.finished is None:
                continue
            pending.done.wait(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------ reading

    def get(self, run_id: str) -> RunRow:
        run = self._store.run(run_id)
        if run is None:
            shown = run_id if len(run_id) <= 40 else f"{run_id[:37]}... ({len(run_id)} characters)"
            raise NotFound(f"no run {shown}", hint="`envctl runs` lists them")
        if run.id in self._provenance:
            self.wait_provenance(run.id)
            run = self._store.run(run.id) or run
        return run

    def list(self, project: str = "", limit: int = 50) -> list[RunRow]:
        self.wait_provenance()
        return self._store.runs(project, limit)

    def details(self, run_id: str) -> RunDetailsRow | None:
        return self._store.run_details(run_id)

    def collect_kept(self, budget: int | None, dry_run: bool = False) -> Sequence[tuple[str, int]]:
        """`envctl gc` for the kept run files: those no recorded run names go, then the
        oldest of the rest while they exceed `budget` bytes. (hex digest, size) of each."""
        if self._kept is None:
            return []
        referenced: set[str] = set()
        for row in self._store.runs("", 1 << 62):
            details = self._store.run_details(row.id)
            if details is not None:
                referenced.update(details.data.values(), details.outputs.values())
        return self._kept.collect(referenced, budget, dry_run)

    def record(self, run_id: str, *, wait: bool = True) -> RunRecord:
        """The run as the model sees it: row and details together."""
        row = self.get(run_id)
        if wait:
            self.wait(row.id)
        return self._record(row)

    def _record(self, row: RunRow) -> RunRecord:
        details = self._store.run_details(row.id)
        commit = row.git_commit
        dirty = row.git_dirty
        diff_sha = details.diff_sha256 if details and dirty else ""
        notes: tuple[str, ...] = details.notes if details else ()
        if details is not None and details.state == "pending":
            notes += ("outputs and metrics are not recorded (yet)",)
        image = details.image_id if details and details.image_id.startswith("sha256:") else ""
        return RunRecord(
            id=row.id,
            project=row.project,
            command=row.command,
            started_at=row.started_at,
            ended_at=row.ended_at,
            exit_code=row.exit_code,
            image=image,
            environment_hash=row.environment_hash,
            host_hash=row.host_hash,
            lock_sha256=details.lock_sha256 if details else "",
            code=CodeState(commit=commit, dirty=dirty, diff_sha256=diff_sha),
            params=details.params if details else {},
            data=details.data if details else {},
            outputs=details.outputs if details else {},
            metrics=details.metrics if details else {},
            notes=notes,
            workdir=row.workdir,
            origin=origin_of(details),
        )

    def records(
        self,
        project: str = "",
        limit: int = 50,
        where: Iterable[str] = (),
        sort: str = "",
        status: str = "",
    ) -> Records:
        """Runs as records, filtered (`--where`, `--status ok|failed|running|N`) and sorted."""
        try:
            wheres = [parse_where(w) for w in where]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.wait(None, timeout=min(self._wait_s, 30.0))
        rows = self._store.runs(project, 100_000 if (wheres or status or sort) else limit)
        rows = [r for r in rows if status_matches(r, status)]
        records = filter_runs((self._record(r) for r in rows), wheres)
        return (sort_runs(records, sort) if sort else records)[:limit]

    def diff(self, a: str, b: str) -> tuple[RunRecord, RunRecord, Changes]:
        first, second = self.record(a), self.record(b)
        return first, second, diff_runs(first, second)

    def trace(self, path: str, sha256: str) -> TraceResult:
        """Which runs wrote these bytes (`path` project-relative, or a file name)."""
        if not SHA256_RE.match(sha256):
            raise UsageError(f"{sha256!r} is not a sha256 hex digest")
        self.wait(None)
        ids = set(self._store.runs_with_output(sha256)) | set(
            self._store.runs_with_output_path(path)
        )
        records = []
        for run_id in sorted(ids):
            row = self._store.run(run_id)
            if row is not None:
                records.append(self._record(row))
        now = time.time()
        result = trace(path, sha256, records, now=now)
        if result.producer is None and result.same_content:
            # The same bytes at another path (another checkout, an imported run): that run.
            _, other_path = result.same_content[0]
            result = trace(other_path, sha256, records, now=now)
        if result.producer is None:
            raise NotFound(
                f"{path}: no recorded run wrote these bytes (sha256 {sha256[:12]})",
                hint="only outputs declared in envd.yaml `runs: outputs` are recorded",
            )
        return result

    # ------------------------------------------------------------ import

    def import_statement(self, text: str, origin: str) -> tuple[RunRecord, bool]:
        """`runs import`: the run a provenance statement read from `origin` describes, and
        whether it was added (False: already here). A statement that is not envd's, or that
        dates the run after now (plus a day of clock skew), is refused (StatementRefused)."""
        record = record_from_statement(text, origin=origin_name(origin), now=time.time())
        return record, self.import_record(record)

    def import_record(self, record: RunRecord, diff: str = "") -> bool:
        """Store a run recorded elsewhere (its provenance statement); False if already here."""
        row = RunRow(
            id=record.id,
            project=record.project,
            command=record.command,
            image=record.image,
            started_at=record.started_at,
            ended_at=record.ended_at,
            exit_code=record.exit_code,
            finished=True,
            environment_hash=record.environment_hash,
            host_hash=record.host_hash,
            git_commit=record.code.commit,
            git_dirty=record.code.dirty,
            workdir=record.workdir,
        )
        if not self._store.insert_run(row):
            return False
        self._store.put_run_details(
            RunDetailsRow(
                run_id=record.id,
                state="done",
                params=dict(record.params),
                data=dict(record.data),
                outputs=dict(record.outputs),
                metrics=dict(record.metrics),
                notes=(*record.notes, IMPORTED_NOTE + (record.origin or STATEMENT)),
                lock_sha256=record.lock_sha256,
                diff_sha256=record.code.diff_sha256,
                diff=diff,
                imported=True,
                image_id=record.image,
            )
        )
        return True

    # ------------------------------------------------------------ checks for a rerun

    def input_changes(self, record: RunRecord, project_dir: str, spec: RunsSpec) -> Strings:
        """What differs now from what `record` ran with: code and data."""
        reasons: list[str] = []
        commit, dirty = commit_and_dirty(project_dir)
        if commit != record.code.commit:
            reasons.append(f"code: commit {record.code.commit[:12] or '-'} -> {commit[:12] or '-'}")
        elif dirty != record.code.dirty:
            reasons.append(f"code: uncommitted changes {record.code.dirty} -> {dirty}")
        elif dirty:
            _, diff_sha, _ = uncommitted_diff(project_dir)
            if diff_sha != record.code.diff_sha256:
                reasons.append("code: the uncommitted diff changed")
        if self._hashes is not None and spec.data:
            now = self._hashes.snapshot(project_dir, spec.data)
            for path in sorted(set(now) | set(record.data)):
                if now.get(path) != record.data.get(path):
                    before, after = record.data.get(path), now.get(path)
                    if before is None:
                        reasons.append(f"data {path}: new")
                    elif after is None:
                        reasons.append(f"data {path}: removed")
                    else:
                        reasons.append(f"data {path}: {before[:12]} -> {after[:12]}")
        return reasons
