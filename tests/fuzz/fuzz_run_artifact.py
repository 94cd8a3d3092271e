"""Fuzz target: shared runs read back from a registry (`envctl pull run`, `runs --from`).

Arbitrary bytes go through `parse_manifest` (the artifact manifest) and `parse_config` (the
record and statement). Only `envd.errors.EnvdError` (a refused artifact) may escape; any other
exception is a crash. What is accepted names only relative paths inside the project.
"""

from __future__ import annotations

from envd.model.runartifact import parse_config, parse_manifest
from envd.model.runrecord import is_project_subdir

NOW = 1_800_000_000.0  # a fixed clock: the same input always takes the same path


def target(data: bytes) -> None:
    try:
        artifact = parse_manifest(data, "fuzz")
    except Exception as exc:
        from envd.errors import EnvdError

        if not isinstance(exc, EnvdError):
            raise
    else:
        for file in artifact.files:
            assert is_project_subdir(file.path), file.path
    shared = parse_config(data, "fuzz", NOW)
    assert is_project_subdir(shared.record.workdir)
    for name in (*shared.record.outputs, *shared.record.data, *shared.record.params):
        assert is_project_subdir(name), name


def main() -> None:  # pragma: no cover - run by hand: python -m tests.fuzz.fuzz_run_artifact
    import sys

    import atheris  # type: ignore[import-not-found]

    from envd.errors import EnvdError

    atheris.instrument_all()

    def refusals_are_fine(data: bytes) -> None:
        try:
            target(data)
        except EnvdError:
            pass

    atheris.Setup(sys.argv, refusals_are_fine)
    atheris.Fuzz()


if __name__ == "__main__":  # pragma: no cover
    main()
