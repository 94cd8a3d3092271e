"""Resolving Debian packages to exact versions on a registry-image base (pure parsing)."""

from __future__ import annotations

import re

from envd.model.lockfile import DebianPackage

# `apt-get install -s` prints: Inst libgomp1 (12.2.0-14 Debian:12.5/stable [amd64])
_INST = re.compile(
    r"^Inst (?P<name>\S+) (?:\[[^\]]*\] )?\((?P<version>\S+) [^\[]*\[(?P<arch>[^\]]+)\]"
)


def parse_simulated_install(output: str) -> tuple[DebianPackage, ...]:
    """The packages `apt-get install -s` would install, sorted by name."""
    found = {}
    for line in output.splitlines():
        match = _INST.match(line.strip())
        if match:
            found[match["name"]] = DebianPackage(match["name"], match["version"], match["arch"])
    return tuple(found[name] for name in sorted(found))


def resolve_script(packages: list[str]) -> list[str]:
    """argv run as root in a container of the base to simulate installing `packages`."""
    names = " ".join(packages)
    return [
        "sh",
        "-c",
        "set -e; apt-get update -qq >/dev/null; "
        f"apt-get install -s --no-install-recommends -y {names}",
    ]
