"""Debian base images: an mmdebstrap tarball, imported into the engine, pinned by its sha256.

The lock pins a Debian base by the tarball's sha256 and its exact package set, never by the
engine's image ID (an import's ID carries a timestamp, so it differs from machine to machine).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from envd.errors import LockStale
from envd.gateways.engine import ImageInfo
from envd.gateways.mmdebstrap import build_tarball
from envd.lockfile import BaseLock, DebianPackage
from envd.progress import Progress, Reporter, ignore

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Fixed, so the same package set always gives the same bytes: a base is identified by what is
# in it, not by when it was made.
SOURCE_DATE_EPOCH = 1_700_000_000
REQUIRED = ("ca-certificates", "python3", "python3-venv")
REPOSITORY = "envd/base-debian"
_IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)


class ImageEngine(Protocol):
    def inspect_image(self, ref: str) -> ImageInfo | None: ...

    def import_tarball(
        self,
        path: str | Path,
        repository: str,
        tag: str,
        labels: Mapping[str, str] | None = None,
        changes: Sequence[str] = (),
    ) -> str: ...


def parse_dpkg_status(text: str) -> tuple[DebianPackage, ...]:
    """Installed packages from a dpkg status file, sorted by name."""
    found: dict[str, DebianPackage] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") and "installed" in fields.get("Status", "").split():
            name = fields["Package"]
            found[name] = DebianPackage(
                name, fields.get("Version", ""), fields.get("Architecture", "")
            )
    return tuple(found[n] for n in sorted(found))


def read_packages(tar_path: Path) -> tuple[DebianPackage, ...]:
    with tarfile.open(tar_path) as tar:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            try:
                member = tar.extractfile(name)
            except KeyError:
                continue
            if member is not None:
                return parse_dpkg_status(member.read().decode("utf-8", "replace"))
    return ()


def cache_key(suite: str, mirror: str, include: Sequence[str]) -> str:
    payload = json.dumps([suite, mirror, sorted(set(include)), SOURCE_DATE_EPOCH])
    return hashlib.sha256(payload.encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tarball(
    suite: str, include: list[str], mirror: str, cache_dir: Path, progress: Reporter
) -> tuple[Path, str, tuple[DebianPackage, ...]]:
    """The cached tarball for these inputs (built once), its sha256 and package set."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(suite, mirror, include)[:24]
    tar = cache_dir / f"{key}.tar"
    meta = cache_dir / f"{key}.json"
    if tar.exists() and meta.exists():
        data = json.loads(meta.read_text())
        packages = tuple(DebianPackage(*p) for p in data["packages"])
        return tar, str(data["sha256"]), packages
    progress(Progress("base", f"building the Debian {suite} base with mmdebstrap"))
    build_tarball(suite, include, mirror, tar, source_date_epoch=SOURCE_DATE_EPOCH)
    sha = _sha256(tar)
    packages = read_packages(tar)
    partial = meta.with_suffix(".partial")
    partial.write_text(
        json.dumps({"sha256": sha, "packages": [list(p.__dict__.values()) for p in packages]})
    )
    partial.replace(meta)
    return tar, sha, packages


def ensure_debian_base(
    engine: ImageEngine,
    suite: str,
    system_packages: Sequence[str],
    mirror: str,
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
) -> BaseLock:
    """Make (or reuse) the base for `suite` + `system_packages` and import it into the engine."""
    include = sorted({*REQUIRED, *system_packages})
    tar, sha, packages = _tarball(suite, include, mirror, cache_dir, progress)
    tag = sha[:12]
    if engine.inspect_image(f"{REPOSITORY}:{tag}") is None:
        progress(Progress("base", f"importing the {suite} base into the engine"))
        engine.import_tarball(
            tar,
            REPOSITORY,
            tag,
            labels={"envd.base.tarball-sha256": sha, "envd.base.suite": suite},
            changes=_IMPORT_CHANGES,
        )
    return BaseLock(
        kind="debian",
        reference=f"{REPOSITORY}:{tag}",
        digest=f"sha256:{sha}",
        suite=suite,
        mirror=mirror,
        tarball_sha256=f"sha256:{sha}",
        packages=packages,
    )


def restore_debian_base(
    engine: ImageEngine,
    locked: BaseLock,
    system_packages: Sequence[str],
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
) -> str:
    """Bring back the base a lock names (e.g. after gc); refuse when the mirror moved on."""
    if engine.inspect_image(locked.reference) is not None:
        return locked.reference
    made = ensure_debian_base(
        engine, locked.suite, system_packages, locked.mirror, cache_dir, progress=progress
    )
    if made.tarball_sha256 != locked.tarball_sha256:
        old = {p.name: p.version for p in locked.packages}
        new = {p.name: p.version for p in made.packages}
        changed = sorted(
            f"{n} {old.get(n, '-')} -> {new.get(n, '-')}"
            for n in old.keys() | new.keys()
            if old.get(n) != new.get(n)
        )
        raise LockStale(
            f"the Debian {locked.suite} mirror has moved on since envd.lock was made: "
            + (", ".join(changed[:10]) or "the tarball differs"),
            hint="run `envctl lock --upgrade` to take the new packages, or `envctl pull` a "
            "shared image of the locked environment",
        )
    return made.reference
