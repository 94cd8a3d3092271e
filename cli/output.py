"""Printing: tables and lines for people, JSON for programs, progress for long calls."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from cli.plain import ago as ago  # (re-exported: the commands print with these)
from cli.plain import echo as echo
from cli.plain import human_bytes as human_bytes
from cli.plain import table as table

if TYPE_CHECKING:
    from envd.v1 import envd_pb2 as pb

_Result_co = TypeVar("_Result_co", covariant=True)
_Result = TypeVar("_Result")


class ProgressEvent(Protocol[_Result_co]):
    """A long call's stream event (LockEvent, BuildEvent, ShareEvent, PullEvent)."""

    @property
    def progress(self) -> pb.Progress: ...

    @property
    def result(self) -> _Result_co: ...

    def HasField(self, field_name: str) -> bool: ...  # protobuf's name


def message_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    result: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


def emit_json(data: Any) -> None:
    if hasattr(data, "DESCRIPTOR"):
        data = message_dict(data)
    echo(json.dumps(data, indent=2, sort_keys=True))


def on_terminal() -> bool:
    """Whether stdout is a terminal (not a pipe, a file or a test's capture)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int:
    import shutil

    return max(20, shutil.get_terminal_size((80, 24)).columns)


def layout(items: Sequence[str], width: int | None, indent: int = 2) -> list[str]:
    """Items as lines: one per line when width is None (not a terminal), else in as many
    columns (filled top to bottom) as fit in width."""
    pad = " " * indent
    if not items:
        return []
    if width is None:
        return [pad + item for item in items]
    cell = max(len(item) for item in items) + 2
    ncols = max(1, (width - indent + 2) // cell)
    nrows = -(-len(items) // ncols)
    lines = []
    for r in range(nrows):
        row = [items[c * nrows + r] for c in range(ncols) if c * nrows + r < len(items)]
        lines.append(pad + "".join(f"{item:<{cell}}" for item in row).rstrip())
    return lines


def echo_items(items: Sequence[str], indent: int = 2) -> None:
    """Print items one per line, or in columns across the terminal's width on a terminal."""
    width = terminal_width() if on_terminal() else None
    for line in layout(items, width, indent):
        echo(line)


class ProgressDisplay:
    """One updating status line on a terminal; plain lines otherwise (CI logs, pipes)."""

    def __init__(self, as_json: bool = False, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.as_json = as_json
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and not as_json
        self._open = False
        self._last_step = ""

    def update(self, progress: pb.Progress) -> None:
        import click

        if self.as_json:  # stdout carries only the result; progress goes to stderr as JSON lines
            click.echo(json.dumps({"progress": message_dict(progress)}, sort_keys=True), err=True)
            return
        text = progress.message
        if progress.total:
            text += f" ({progress.current}/{progress.total})"
        label = f"[{progress.step}] " if progress.step else ""
        if progress.log:
            self._clear()
            click.echo(f"  {label}{text}", file=self.stream)
            return
        if self.tty:
            width = 100
            line = f"{label}{text} {progress.elapsed_s:5.1f}s"[:width]
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self._open = True
        else:
            click.echo(f"{label}{text}", file=self.stream)

    def _clear(self) -> None:
        if self._open:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._open = False

    def close(self) -> None:
        self._clear()


def follow(events: Iterable[ProgressEvent[_Result]], as_json: bool = False) -> _Result:
    """Show a long call's progress events; return its final `result`."""
    display = ProgressDisplay(as_json=as_json)
    result: _Result | None = None
    try:
        for event in events:
            if event.HasField("progress"):
                display.update(event.progress)
            else:
                result = event.result
    finally:
        display.close()
    if result is None:
        import click

        raise click.ClickException("the daemon ended the call without a result")
    return result
