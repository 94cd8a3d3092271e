"""Rows of the runs store as users see them: where an imported run came from, `--status`
filters, and the empty details a run starts with."""

from __future__ import annotations

from envd.errors import UsageError
from envd.gateways.store import RunDetailsRow, RunRow


def empty_details(run_id: str, image_id: str) -> RunDetailsRow:
    return RunDetailsRow(
        run_id=run_id,
        state="pending",
        params={},
        data={},
        outputs={},
        metrics={},
        notes=(),
        lock_sha256="",
        diff_sha256="",
        diff="",
        imported=False,
        image_id=image_id,
    )


IMPORTED_NOTE = "imported from "  # the note an imported run carries, then its origin
STATEMENT = "a provenance statement"  # the origin of a run imported before envd kept it
MAX_ORIGIN = 200


def origin_name(origin: str) -> str:
    """Where a statement was read, as shown beside its run: printable, bounded."""
    shown = "".join(c if c.isprintable() else "?" for c in origin)
    if len(shown) > MAX_ORIGIN:
        shown = "..." + shown[-(MAX_ORIGIN - 3) :]
    return shown or STATEMENT


def origin_of(details: RunDetailsRow | None) -> str:
    if details is None or not details.imported:
        return ""
    for note in reversed(details.notes):
        if note.startswith(IMPORTED_NOTE):
            return note[len(IMPORTED_NOTE) :] or STATEMENT
    return STATEMENT


def status_matches(row: RunRow, status: str) -> bool:
    if not status:
        return True
    if status == "running":
        return not row.finished
    if status in ("ok", "success", "succeeded"):
        return row.finished and row.exit_code == 0
    if status in ("failed", "error"):
        return row.finished and row.exit_code != 0
    if status.lstrip("-").isdigit():
        return row.finished and row.exit_code == int(status)
    raise UsageError(f"--status {status!r}: expected ok, failed, running or an exit code")
