"""Debian base images: an mmdebstrap tarball, imported into the engine, pinned by its sha256.

The lock pins a Debian base by the tarball's sha256 and its exact package set, never by the
engine's image ID: an import's ID carries the import time, so it differs from machine to
machine, and the same lock must give the same environment hash everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from envd.errors import LockError, LockStale
from envd.gateways import mmdebstrap
from envd.gateways.files import file_lock, sha256_file, write_atomic
from envd.gateways.proc import CommandError
from envd.model import names
from envd.model.lockfile import BaseLock, DebianPackage
from envd.progress import Progress, Reporter, ignore

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Fixed, not "now": every file's mtime is clamped to it, so the same package set gives the same
# bytes today, next month and on a colleague's machine. A base is identified by what is in it,
# never by when it was made. (2023-11-14, after bookworm's release; changing it changes every
# base's sha256 and so every Debian lock's base.)
SOURCE_DATE_EPOCH = 1_700_000_000
REQUIRED = ("ca-certificates", "python3", "python3-venv")
REPOSITORY = names.BASE_REPOSITORY
LABEL_SHA256 = names.BASE_TARBALL_LABEL
LABEL_SUITE = names.BASE_SUITE_LABEL
_IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)


class BaseEngine(Protocol):
    """What this module needs from the engine (envd.gateways.engine.Engine has it)."""

    def image_exists(self, ref: str) -> bool: ...

    def image_layers(self, ref: str) -> tuple[str, ...] | None: ...

    def import_tarball(
        self,
        path: str | Path,
        repository: str,
        tag: str,
        labels: Mapping[str, str] | None = None,
        changes: Sequence[str] = (),
    ) -> str: ...


@dataclass(frozen=True)
class BaseTarball:
    path: Path
    sha256: str  # "sha256:<hex>"
    packages: tuple[DebianPackage, ...]

    @property
    def tag(self) -> str:
        return self.sha256.removeprefix("sha256:")[:12]


def include_list(system_packages: Sequence[str]) -> list[str]:
    """What mmdebstrap installs on top of minbase: envd's needs plus the spec's `system`."""
    return sorted({*REQUIRED, *system_packages})


def cache_key(suite: str, mirror: str, include: Sequence[str], arch: str | None = None) -> str:
    """The tarball's cache key: everything that decides its content (not the call order)."""
    payload = json.dumps(
        [
            suite,
            mirror.rstrip("/"),
            sorted(set(include)),
            arch or "",
            SOURCE_DATE_EPOCH,
            *mmdebstrap.RECIPE,
        ]
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def package_changes(old: Sequence[DebianPackage], new: Sequence[DebianPackage]) -> list[str]:
    """`name old -> new` for every package added, removed or at another version."""
    before = {(p.name, p.arch): p.version for p in old}
    after = {(p.name, p.arch): p.version for p in new}
    return [
        f"{name} {before.get((name, arch), '(none)')} -> {after.get((name, arch), '(none)')}"
        for name, arch in sorted(before.keys() | after.keys())
        if before.get((name, arch)) != after.get((name, arch))
    ]


def ensure_tarball(
    suite: str,
    include: Sequence[str],
    mirror: str,
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
    refresh: bool = False,
    arch: str | None = None,
) -> BaseTarball:
    """The cached tarball for these inputs, built with mmdebstrap when missing (or `refresh`)."""
    key = cache_key(suite, mirror, include, arch)[:24]
    tar = cache_dir / f"{key}.tar"
    meta = cache_dir / f"{key}.json"
    with _locked(cache_dir, key):
        if not refresh and tar.exists():
            known = _read_meta(meta, tar)
            if known is not None:
                return known
        progress(Progress("base", f"building the Debian {suite} base with mmdebstrap"))
        try:
            mmdebstrap.build_tarball(
                suite,
                include,
                mirror,
                tar,
                source_date_epoch=SOURCE_DATE_EPOCH,
                arch=arch,
                on_line=lambda line: progress(Progress("base", line, log=True)),
            )
        except CommandError as exc:
            raise LockError(exc.message, hint=exc.hint) from exc
        made = BaseTarball(tar, _sha256(tar), mmdebstrap.list_packages(tar))
        _write_meta(meta, made)
        return made


def ensure_debian_base(
    engine: BaseEngine,
    suite: str,
    system_packages: Sequence[str],
    mirror: str,
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
    labels: Mapping[str, str] | None = None,
    repository: str = REPOSITORY,
    refresh: bool = False,
) -> BaseLock:
    """Make (or reuse) the base for `suite` + `system_packages` and import it into the engine.

    A second call with the same inputs runs no mmdebstrap and imports nothing. `refresh`
    rebuilds the tarball from the mirror as it is now (for `envctl lock --upgrade`).
    """
    include = include_list(system_packages)
    made = ensure_tarball(suite, include, mirror, cache_dir, progress=progress, refresh=refresh)
    reference = f"{repository}:{made.tag}"
    if not is_base(engine, reference, made.sha256) and _sha256(made.path) != made.sha256:
        # The cached file changed since it was made (disk, hand edit): make it again.
        made = ensure_tarball(suite, include, mirror, cache_dir, progress=progress, refresh=True)
        reference = f"{repository}:{made.tag}"
    with _locked(cache_dir, f"import-{made.tag}"):
        if not is_base(engine, reference, made.sha256):  # a tag is never trusted by its name
            progress(Progress("base", f"importing the {suite} base into the engine as {reference}"))
            engine.import_tarball(
                made.path,
                repository,
                made.tag,
                labels={**dict(labels or {}), LABEL_SHA256: made.sha256, LABEL_SUITE: suite},
                changes=_IMPORT_CHANGES,
            )
    return BaseLock(
        kind="debian",
        reference=reference,
        digest=made.sha256,
        suite=suite,
        mirror=mirror,
        tarball_sha256=made.sha256,
        packages=made.packages,
    )


def verify_debian_base(
    engine: BaseEngine,
    locked: BaseLock,
    system_packages: Sequence[str],
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
    labels: Mapping[str, str] | None = None,
    repository: str = REPOSITORY,
) -> BaseLock:
    """Make the base a lock names again (or reuse it) and check it has the locked package set.

    The package set decides: a tarball whose bytes differ but whose packages are the same
    (another mmdebstrap version made it) is the same base.
    """
    made = ensure_debian_base(
        engine,
        locked.suite,
        system_packages,
        locked.mirror,
        cache_dir,
        progress=progress,
        labels=labels,
        repository=repository,
    )
    if made.tarball_sha256 == locked.tarball_sha256:
        return made
    changed = package_changes(locked.packages, made.packages)
    if changed or not locked.packages:
        shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if changed[10:] else "")
        raise LockStale(
            f"the Debian {locked.suite} mirror has moved on since envd.lock was made: "
            + (shown or f"the base is {made.tarball_sha256}, the lock has {locked.tarball_sha256}"),
            hint="run `envctl lock --upgrade` to take the new packages, or `envctl pull` a "
            "shared image of the locked environment",
        )
    progress(
        Progress(
            "base",
            f"the {locked.suite} base made here has the locked packages but other bytes "
            f"({made.tarball_sha256[:19]}, lock {locked.tarball_sha256[:19]}); using it",
        )
    )
    return made


def restore_debian_base(
    engine: BaseEngine,
    locked: BaseLock,
    system_packages: Sequence[str],
    cache_dir: Path,
    *,
    progress: Reporter = ignore,
) -> str:
    """The engine reference of the base a lock names: as it is when its one layer is the
    locked tarball (a `docker import` of an uncompressed tar has the tar's sha256 as its
    diff-id), else made again and verified."""
    if locked.reference and is_base(engine, locked.reference, locked.tarball_sha256):
        return locked.reference
    return verify_debian_base(
        engine, locked, system_packages, cache_dir, progress=progress
    ).reference


def is_base(engine: BaseEngine, reference: str, tarball_sha256: str) -> bool:
    """Whether `reference` is the import of exactly the tarball with that sha256."""
    return engine.image_layers(reference) == (tarball_sha256,)


# ------------------------------------------------------------ cache files


@contextmanager
def _locked(cache_dir: Path, key: str) -> Iterator[None]:
    """One build (or import) per key at a time, across threads and processes."""
    with file_lock(cache_dir / f"{key}.lock"):
        yield


def _read_meta(meta: Path, tar: Path) -> BaseTarball | None:
    try:
        data = json.loads(meta.read_text())
        return BaseTarball(
            tar, str(data["sha256"]), tuple(DebianPackage(*p) for p in data["packages"])
        )
    except FileNotFoundError:  # the tarball landed, its record did not: make the record
        made = BaseTarball(tar, _sha256(tar), mmdebstrap.list_packages(tar))
        _write_meta(meta, made)
        return made
    except (ValueError, KeyError, TypeError):
        return None


def _write_meta(meta: Path, made: BaseTarball) -> None:
    record = {
        "sha256": made.sha256,
        "packages": [[p.name, p.version, p.arch] for p in made.packages],
    }
    write_atomic(meta, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    return f"sha256:{sha256_file(path)}"
