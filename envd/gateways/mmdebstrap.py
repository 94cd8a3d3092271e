"""mmdebstrap: the only module that runs it. Makes Debian root filesystems as tarballs.

With SOURCE_DATE_EPOCH set, mmdebstrap (>= 1.0) clamps every mtime, removes the apt lists and
caches, the dpkg/apt/alternatives logs and ldconfig's aux-cache, so the same package set gives
the same bytes. What it leaves is the host's /etc/hostname and /etc/resolv.conf (copied in so
apt can resolve the mirror): those differ from machine to machine, so the hook removes them
(the engine provides both to every container anyway).
"""

from __future__ import annotations

import os
import re
import secrets
import tarfile
from collections.abc import Sequence
from pathlib import Path

from envd.errors import EnvdError
from envd.gateways.proc import CommandError, LineSink, run, tail
from envd.model.lockfile import DebianPackage

_CUSTOMIZE_HOOK = (
    'rm -f "$1/etc/hostname" "$1/etc/resolv.conf" '
    '"$1"/var/lib/dpkg/*-old "$1"/var/cache/debconf/*-old'
)
# Every option that shapes the tarball's content; part of the cache key of a built base.
RECIPE: tuple[str, ...] = (
    "--variant=minbase",
    "--format=tar",
    '--aptopt=Acquire::Retries "3"',
    f"--customize-hook={_CUSTOMIZE_HOOK}",
)
TIMEOUT_S = 1800
_STATUS_MEMBERS = ("./var/lib/dpkg/status", "var/lib/dpkg/status")


def build_tarball(
    suite: str,
    include: Sequence[str],
    mirror: str,
    out_path: Path,
    *,
    source_date_epoch: int,
    arch: str | None = None,
    on_line: LineSink | None = None,
) -> None:
    """Write a minbase root filesystem with `include` to out_path.

    Atomic: the tarball is written next to out_path and moved into place when complete, so a
    failed or interrupted run leaves nothing at out_path (and no temporary file).
    """
    mode = "root" if os.getuid() == 0 else "unshare"
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    argv = [
        "mmdebstrap",
        f"--mode={mode}",
        *RECIPE,
        *([f"--architectures={arch}"] if arch else []),
        f"--include={','.join(sorted(set(include)))}",
        suite,
        str(tmp),
        mirror,
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    try:
        run(argv, env=env, timeout=TIMEOUT_S, on_line=on_line)
        os.replace(tmp, out_path)
    except CommandError as exc:
        message, hint = explain_failure(exc.output, suite, mirror)
        raise CommandError(
            message, argv=argv, returncode=exc.returncode, output=exc.output, hint=hint
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def explain_failure(output: str, suite: str, mirror: str) -> tuple[str, str]:
    """A message and a hint for a failed mmdebstrap run, from the end of its output."""
    patterns = (
        (r"Unable to locate package (\S+)", "Debian package `{0}` is not in {suite}"),
        (
            r"Package '([^']+)' has no installation candidate",
            "Debian package `{0}` is not installable in {suite}",
        ),
        (r"Version '([^']+)' for '([^']+)' was not found", "{1}={0} is not in {suite}"),
    )
    for pattern, template in patterns:
        found = re.search(pattern, output)
        if found:
            return (
                template.format(*found.groups(), suite=suite),
                f"check the name under `system:` (https://packages.debian.org/{suite}/"
                f"{found.groups()[-1]}, or `apt-cache search NAME`)",
            )
    if re.search(r"does not have a Release file|404\s+Not Found \[IP", output):
        return (
            f"the mirror {mirror} has no suite `{suite}`",
            "use a Debian suite name such as bookworm or trixie under `base: {debian: ...}`",
        )
    if re.search(r"Temporary failure resolving|Could not connect|Could not resolve", output):
        return f"the Debian mirror {mirror} cannot be reached", "check the network or proxy"
    if re.search(r"held broken packages|Unable to correct problems", output):
        return (
            f"the Debian packages asked for cannot be installed together in {suite}:\n"
            + tail(output, 15),
            "remove the conflicting package from `system:`",
        )
    return (
        f"mmdebstrap could not build the {suite} base:\n" + tail(output, 15),
        "the lines above are the end of mmdebstrap's output",
    )


def parse_dpkg_status(text: str) -> tuple[DebianPackage, ...]:
    """The installed packages in a dpkg status file, sorted by name and architecture."""
    found: set[DebianPackage] = set()
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        status = fields.get("Status", "").split()
        if fields.get("Package") and status and status[-1] == "installed":
            found.add(
                DebianPackage(
                    fields["Package"], fields.get("Version", ""), fields.get("Architecture", "")
                )
            )
    return tuple(sorted(found, key=lambda p: (p.name, p.arch, p.version)))


def list_packages(tar_path: Path) -> tuple[DebianPackage, ...]:
    """The exact package set of a root filesystem tarball (from its var/lib/dpkg/status)."""
    with tarfile.open(tar_path) as tar:
        for name in _STATUS_MEMBERS:
            try:
                member = tar.extractfile(name)
            except KeyError:
                continue
            if member is not None:
                return parse_dpkg_status(member.read().decode("utf-8", "replace"))
    raise EnvdError(f"{tar_path} has no var/lib/dpkg/status: it is not a Debian root filesystem")
