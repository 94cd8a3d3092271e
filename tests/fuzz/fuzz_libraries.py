"""Fuzz target: arbitrary bytes as the shared-library check's output (written by a script in a
container of packages nobody vetted), as a remembered need and as Debian's Contents index.
Nothing may escape: these readers take what they understand and leave the rest."""

from __future__ import annotations

from envd.model.apt import contents_packages, loads_needs
from envd.model.libraries import failure_message, judge, needed_packages, notes_message


def target(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    report = judge(text)
    failure_message(report.failures)
    notes_message(report.notes)
    needed_packages(report.failures)
    loads_needs(text)
    contents_packages(data.splitlines(keepends=True), ["libgomp.so.1", "libx.so"])


if __name__ == "__main__":
    import sys

    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
