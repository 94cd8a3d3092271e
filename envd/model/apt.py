"""Resolving Debian packages to exact versions on a registry-image base (pure parsing)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envd.model.lockfile import DebianPackage

# `apt-get install -s` prints: Inst libgomp1 (12.2.0-14 Debian:12.5/stable [amd64])
_INST = re.compile(
    r"^Inst (?P<name>\S+) (?:\[[^\]]*\] )?\((?P<version>\S+) [^\[]*\[(?P<arch>[^\]]+)\]"
)


# A Debian package name (Debian policy 5.6.1): also what keeps a remembered name out of argv.
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")


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


# ------------------------------------------------------------ Debian packages wheels need
#
# Wheels leave some shared libraries to the system (lightgbm: libgomp.so.1). `envctl lock` adds
# the Debian packages that provide them to the lock's system packages, with a notice, for the
# pins it knows to need them: a few well-known distributions below, and every `name==version`
# whose need a build's library check found (remembered in the state store under `needs_key`).
# A package already named in `system:` or already in the base is never added or changed.
KNOWN_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "lightgbm": (("libgomp.so.1", "libgomp1"),),  # linked, never vendored
}


@dataclass(frozen=True)
class Addition:
    package: str  # the Debian package
    distribution: str  # the Python distribution that needs it
    soname: str

    def notice(self) -> str:
        return f"added {self.package}: {self.distribution} needs {self.soname}"


def installed_script() -> tuple[str, ...]:
    """argv that lists the Debian packages an image has installed, one name a line."""
    return ("dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Package}\\n")


def parse_installed(output: str) -> list[str]:
    """The names `installed_script` printed as installed (`ii`), without `:arch`."""
    return [
        parts[1].split(":", 1)[0]
        for parts in (line.split() for line in output.splitlines())
        if len(parts) == 2 and parts[0] == "ii" and _DEB_NAME.match(parts[1].split(":", 1)[0])
    ]


def needs_key(pinned: str) -> str:
    """The state-store key for what `name==version` needs (`name` canonical)."""
    return f"libraries:{pinned}"


def dumps_needs(pairs: Iterable[tuple[str, str]]) -> str:
    return json.dumps(sorted([soname, deb] for soname, deb in pairs))


def loads_needs(text: str | None) -> tuple[tuple[str, str], ...]:
    """What `dumps_needs` wrote; anything else (an older or damaged record) is nothing."""
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(
        (item[0], item[1])
        for item in value
        if isinstance(item, list)
        and len(item) == 2
        and all(isinstance(x, str) and _DEB_NAME.match(x) for x in item[1:])
        and isinstance(item[0], str)
    )


def system_additions(
    pins: Iterable[tuple[str, str]],
    learned: Mapping[str, tuple[tuple[str, str], ...]],
    have: Iterable[str],
) -> tuple[Addition, ...]:
    """The Debian packages to add for `pins` ((canonical name, version)), given what builds
    found (`learned`, by `name==version`) and the packages the lock already has (`have`)."""
    present = set(have)
    out: dict[str, Addition] = {}
    for name, version in sorted(pins):
        for soname, deb in KNOWN_NEEDS.get(name, ()) + learned.get(f"{name}=={version}", ()):
            if deb not in present and deb not in out:
                out[deb] = Addition(deb, name, soname)
    return tuple(out[k] for k in sorted(out))


# ------------------------------------------------------------ Debian's Contents index
#
# `dists/SUITE/main/Contents-ARCH.gz` has a line per file of every package: the path (no
# leading slash), blanks, then `section/package[,section/package...]`. A soname is provided
# by the packages that put a file of that name in a library folder.
LIBRARY_DIRS = ("usr/lib/", "lib/")
DEBIAN_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64el", "s390x": "s390x"}


def contents_packages(lines: Iterable[bytes], sonames: Iterable[str]) -> dict[str, str]:
    """soname -> the Debian package whose library folder has a file of that name (when several
    do: a runtime package before -dev ones, then the first by name); sonames none provides are
    left out."""
    wanted = {s.encode() for s in sonames}
    found: dict[str, set[str]] = {}
    for line in lines:
        if not any(soname in line for soname in wanted):  # (most lines: cheap)
            continue
        parts = line.rstrip(b"\n").rsplit(None, 1)
        if len(parts) != 2:
            continue
        path, locations = parts[0].strip(), parts[1]
        folder, _, name = path.rpartition(b"/")
        if name not in wanted or not (folder + b"/").decode(errors="replace").startswith(
            LIBRARY_DIRS
        ):
            continue
        for location in locations.decode(errors="replace").split(","):
            package = location.rsplit("/", 1)[-1]
            if _DEB_NAME.match(package):
                found.setdefault(name.decode(), set()).add(package)

    def rank(package: str) -> tuple[bool, str]:  # a runtime package before a -dev or -dbg
        return (package.endswith(("-dev", "-dbg", "-dbgsym")), package)

    return {soname: min(packages, key=rank) for soname, packages in found.items()}
