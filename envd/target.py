"""What Python packages are resolved for, read once from inside the base image."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Protocol

from envd.errors import LockError
from envd.gateways.engine import RunResult
from envd.lockfile import Target

_SCRIPT = (
    "import json, os, platform; "
    "print(json.dumps({'python': platform.python_version(), "
    "'glibc': os.confstr('CS_GNU_LIBC_VERSION').split()[-1], 'arch': platform.machine()}))"
)


class RunEngine(Protocol):
    def run(self, image: str, argv: list[str], *, network: bool = ...) -> RunResult: ...


class Cache(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


def platform_tag(glibc: str, arch: str) -> str:
    major, minor = glibc.split(".")[:2]
    return f"manylinux_{int(major)}_{int(minor)}_{arch}"


def target_from_probe(output: str) -> Target:
    data = json.loads(output.strip().splitlines()[-1])
    return Target(
        python_version=str(data["python"]),
        platform=platform_tag(str(data["glibc"]), str(data["arch"])),
        glibc=str(data["glibc"]),
        arch=str(data["arch"]),
    )


def inspect_target(engine: RunEngine, image_ref: str, *, cache: Cache, cache_key: str) -> Target:
    cached = cache.get(cache_key)
    if cached is not None:
        return Target(**json.loads(cached))
    result = engine.run(image_ref, ["python3", "-c", _SCRIPT], network=False)
    if result.exit_code != 0:
        raise LockError(
            f"the base image {image_ref} has no working python3 "
            f"(exit {result.exit_code}: {result.output.strip()[-200:]})",
            hint="use a base with Python, e.g. `base: {debian: bookworm}` or python:3.11-slim",
        )
    try:
        target = target_from_probe(result.output)
    except (ValueError, KeyError, IndexError) as exc:
        raise LockError(f"could not read the Python target of {image_ref}: {exc}") from None
    cache.put(cache_key, json.dumps(asdict(target), sort_keys=True))
    return target


def check_python(spec_python: str | None, target: Target, source: str) -> None:
    """ "3.11" matches any 3.11.x; "3.11.2" must match exactly."""
    if not spec_python:
        return
    have = target.python_version.split(".")
    want = spec_python.split(".")
    if have[: len(want)] != want:
        raise LockError(
            f'{source}: python is "{spec_python}", but the base image has Python '
            f"{target.python_version}",
            hint=f'set `python: "{".".join(have[:2])}"`, or pick a base with Python {spec_python}',
        )
