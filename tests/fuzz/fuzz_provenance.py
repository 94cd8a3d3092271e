"""Fuzz target: provenance statements (`envctl runs import FILE`, `trace --provenance FILE`).

Arbitrary bytes, decoded as the CLI decodes a statement, go through `check_statement` and
`record_from_statement`. Only `envd.errors.EnvdError` (a refused statement) may escape; any
other exception is a crash. A record that is accepted must be one envd can store and show:
relative output names, a bounded id, an exit status that fits the wire, no future date.
"""

from __future__ import annotations

from envd.model.provenance import MAX_CLOCK_SKEW_S, check_statement, record_from_statement
from envd.model.runrecord import is_project_subdir

NOW = 1_800_000_000.0  # a fixed clock: the same input always takes the same path


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the CLI refuses these before parsing (read_statement)
    check = check_statement(text, "models/model.json", "0" * 64)
    assert isinstance(check.valid, bool) and all(isinstance(e, str) for e in check.errors)
    record = record_from_statement(text, origin="fuzz.json", now=NOW)
    assert record.imported and record.origin == "fuzz.json"
    assert 0 < len(record.id) <= 128
    assert -(2**31) <= record.exit_code < 2**31
    assert record.started_at <= NOW + MAX_CLOCK_SKEW_S
    assert record.ended_at <= NOW + MAX_CLOCK_SKEW_S
    for name in (*record.outputs, *record.data, *record.params):
        assert is_project_subdir(name), name


def main() -> None:  # pragma: no cover - run by hand: python -m tests.fuzz.fuzz_provenance
    import sys

    import atheris  # type: ignore[import-not-found]

    from envd.errors import EnvdError

    atheris.instrument_all()  # the modules are imported already (above): instrument them

    def refusals_are_fine(data: bytes) -> None:
        try:
            target(data)
        except EnvdError:
            pass

    atheris.Setup(sys.argv, refusals_are_fine)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
