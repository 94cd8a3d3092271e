"""Direct URL packages: their files fetched once, verified by sha256, kept in a local cache.

`envctl lock` downloads each direct URL requirement's file (checked against a `#sha256=` or
`--hash` the requirement gives) and records URL, version and sha256; a build installs exactly
that file, from the cache when a copy with that digest is there, else downloaded again and
refused unless its bytes have the locked digest. Cache layout: CACHE/<sha256>/<file name>.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from envd.errors import LockError
from envd.gateways import urls
from envd.model import direct as d
from envd.model.lockfile import PythonPackage
from envd.model.spec import DirectUrl

_UNREACHABLE_HINT = (
    "check the URL (and that its server is up and reachable from this machine); a direct URL "
    "has no index to fall back on: to take the package from an index instead, write "
    "`{name}==VERSION` (with the index under `indexes:` if it is not PyPI)"
)


class DirectFiles:
    def __init__(self, cache: Path) -> None:
        self._cache = cache

    def lock(self, requirement: DirectUrl) -> tuple[PythonPackage, Path]:
        """Download a direct URL requirement's file: the lock's entry, and the verified copy."""
        try:
            artifact = d.artifact_of(requirement.url, requirement.name)
        except d.DirectUrlProblem as exc:
            raise LockError(f"{requirement.where}: {exc.message}", hint=exc.hint) from None
        url = d.without_fragment(requirement.url)
        what = f"{requirement.where}: `{requirement.requirement}`"
        incoming = self._cache / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=incoming) as tmp:  # (two locks at once: apart)
            fetched = urls.fetch(
                requirement.url,
                Path(tmp) / artifact.filename,
                what=what,
                hint=_UNREACHABLE_HINT.format(name=requirement.name),
                expected=requirement.sha256,
            )
            kept = self._keep(fetched.path, fetched.sha256, artifact.filename)
        package = PythonPackage(
            requirement.name, artifact.version, (f"sha256:{fetched.sha256}",), "", url
        )
        return package, kept

    def place(self, package: PythonPackage, folder: Path) -> Path:
        """Put the locked file of a direct URL package into `folder` (by its file name): the
        cached copy when its bytes still have the locked sha256, else downloaded and checked."""
        digest = package.hashes[0].removeprefix("sha256:")
        filename = d.filename_of(package.url)
        cached = self._cache / digest / filename
        if not (cached.is_file() and urls.sha256_of(cached) == digest):
            urls.fetch(
                package.url,
                cached,
                what=f"{package.name} {package.version} (envd.lock)",
                hint=_UNREACHABLE_HINT.format(name=package.name),
                expected=(digest,),
            )
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        target = folder / filename
        try:
            os.link(cached, target)
        except OSError:  # another filesystem: copy instead
            shutil.copyfile(cached, target)
        target.chmod(0o644)
        return target

    def _keep(self, path: Path, digest: str, filename: str) -> Path:
        kept = self._cache / digest / filename
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, kept)
        return kept
