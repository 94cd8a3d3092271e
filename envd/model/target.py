"""What Python packages are resolved for, read once from inside the base image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Protocol

from envd.errors import LockError
from envd.model.lockfile import Target

# Runs in the base image's python3, which may be old: plain 3.x syntax only.
PROBE_SCRIPT = """\
import json, os, platform
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
except (ValueError, OSError):
    libc = ""
print(json.dumps({
    "python": platform.python_version(),
    "glibc": libc.split()[-1] if libc.startswith("glibc ") else "",
    "arch": platform.machine(),
}))
"""
_PROBE_VERSION = 1  # stored with each cached target; a new probe ignores older entries
_NO_PYTHON_HINT = (
    "use a base with Python 3, e.g. `base: {debian: bookworm}` or `base: {image: python:3.11-slim}`"
)


class ProbeResult(Protocol):
    @property
    def exit_code(self) -> int: ...

    @property
    def output(self) -> str: ...


class ProbeEngine(Protocol):
    """What this module needs from the engine (envd.gateways.engine.Engine has it)."""

    def run(self, image: str, argv: Sequence[str], *, network: bool = ...) -> ProbeResult: ...


class Cache(Protocol):
    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


def platform_tag(glibc: str, arch: str) -> str:
    """The manylinux tag wheels must match: manylinux_<glibc major>_<minor>_<arch>."""
    parts = glibc.split(".")
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit() or not arch:
        raise ValueError(f"not a glibc version and machine: {glibc!r}, {arch!r}")
    return f"manylinux_{int(parts[0])}_{int(parts[1])}_{arch}"


def target_from_probe(output: str, image_ref: str) -> Target:
    """The Target from the probe's output (its last JSON line)."""
    lines = [line for line in output.strip().splitlines() if line.startswith("{")]
    try:
        data = json.loads(lines[-1])
        python, glibc, arch = str(data["python"]), str(data["glibc"]), str(data["arch"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise LockError(
            f"could not read the Python target of {image_ref}; its python3 printed:\n"
            + "\n".join(output.strip().splitlines()[-5:])
        ) from None
    if not glibc:
        raise LockError(
            f"the base image {image_ref} does not use glibc (musl?), so no manylinux wheel fits it",
            hint="use a glibc base such as `base: {debian: bookworm}` or python:3.11-slim",
        )
    try:
        tag = platform_tag(glibc, arch)
    except ValueError as exc:
        raise LockError(f"could not read the Python target of {image_ref}: {exc}") from None
    return Target(python_version=python, platform=tag, glibc=glibc, arch=arch)


def inspect_target(engine: ProbeEngine, image_ref: str, *, cache: Cache, cache_key: str) -> Target:
    """The image's exact Python, glibc, arch and platform tag; one container per cache_key."""
    cached = _from_cache(cache.get(cache_key))
    if cached is not None:
        return cached
    result = engine.run(image_ref, ["python3", "-c", PROBE_SCRIPT], network=False)
    if result.exit_code in (126, 127):  # the shell's and tini's "cannot execute" / "not found"
        raise LockError(f"the base image {image_ref} has no python3", hint=_NO_PYTHON_HINT)
    if result.exit_code != 0:
        raise LockError(
            f"python3 in the base image {image_ref} failed (exit {result.exit_code}):\n"
            + "\n".join(result.output.strip().splitlines()[-5:]),
            hint=_NO_PYTHON_HINT,
        )
    target = target_from_probe(result.output, image_ref)
    cache.put(cache_key, json.dumps({"probe": _PROBE_VERSION, **asdict(target)}, sort_keys=True))
    return target


def _from_cache(text: str | None) -> Target | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
        if data.pop("probe", None) != _PROBE_VERSION:
            return None
        return Target(**data)
    except (ValueError, TypeError, AttributeError):
        return None


def check_python(spec_python: str | None, target: Target, source: str, base: str = "") -> None:
    """ "3.11" matches any 3.11.x; "3.11.2" must match exactly."""
    if not spec_python:
        return
    have = target.python_version.split(".")
    want = spec_python.strip().split(".")
    if have[: len(want)] != want:
        where = f"the base {base}" if base else "the base image"
        raise LockError(
            f'{source}: python is "{spec_python}", but {where} has Python {target.python_version}',
            hint=f'set `python: "{".".join(have[:2])}"`, or pick a base with Python {spec_python}',
        )
