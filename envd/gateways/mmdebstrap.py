"""mmdebstrap: the only module that runs it. Makes Debian root filesystems as tarballs."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from envd.errors import LockError
from envd.gateways.proc import CommandError, run

# Bit-identical output needs every file free of run-specific state (apt lists, logs, caches).
_CLEANUP_HOOK = (
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/ldconfig/aux-cache '
    '"$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log '
    '"$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/etc/machine-id; '
    ': > "$1"/etc/machine-id'
)


def build_tarball(
    suite: str,
    include: Sequence[str],
    mirror: str,
    out_path: Path,
    *,
    source_date_epoch: int,
) -> None:
    """Write a minbase root filesystem with `include` to out_path (atomically)."""
    mode = "root" if os.getuid() == 0 else "unshare"
    tmp = out_path.with_name(f".{out_path.name}.partial")
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        f"--mode={mode}",
        "--format=tar",
        f"--include={','.join(sorted(set(include)))}",
        "--aptopt=Acquire::Retries 3",
        f"--customize-hook={_CLEANUP_HOOK}",
        suite,
        str(tmp),
        mirror,
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date_epoch)}
    try:
        run(argv, env=env, timeout=1800)
    except CommandError as exc:
        tmp.unlink(missing_ok=True)
        missing = re.search(r"Unable to locate package (\S+)", exc.output) or re.search(
            r"Package '([^']+)' has no installation candidate", exc.output
        )
        if missing:
            raise LockError(
                f"Debian package `{missing.group(1)}` is not in {suite}",
                hint="check the name under `system:` (apt-cache search NAME)",
            ) from None
        raise LockError(f"mmdebstrap could not build the {suite} base: {exc.message}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out_path)
