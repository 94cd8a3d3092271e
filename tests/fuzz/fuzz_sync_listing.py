"""Fuzz target: the engine's sync listing (find's NUL-separated output) and sha256sum's output,
both written by whatever runs in a container."""

from __future__ import annotations

from envd.model.projectsync import parse_find, parse_sha256sum


def target(data: bytes) -> None:
    status = data[0] % 3 if data else 0
    listing = parse_find(data[1:], status)
    for path in listing.files:
        assert not path.startswith("/") and ".." not in path.split("/"), path
    parse_sha256sum(data.decode("utf-8", "surrogateescape"), ["a", "b"])


if __name__ == "__main__":
    import sys

    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
