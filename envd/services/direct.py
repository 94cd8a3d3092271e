"""Direct URL packages: their files fetched once, verified by sha256, kept in a local cache.

`envctl lock` downloads each direct URL requirement's file (checked against a `#sha256=` or
`--hash` the requirement gives) and records URL, version and sha256; a build installs exactly
that file, from the cache when a copy with that digest is there, else downloaded again and
refused unless its bytes have the locked digest. Cache layout: CACHE/<sha256>/<file name>.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from envd.errors import LockError
from envd.gateways import git, urls
from envd.gateways.files import sha256_file
from envd.model import direct as d
from envd.model import safenames
from envd.model.lockfile import PythonPackage
from envd.model.safenames import UnsafeName
from envd.model.spec import DirectUrl

_HEX64 = re.compile(r"[0-9a-f]{64}")
_UNREACHABLE_HINT = (
    "check the URL (and that its server is up and reachable from this machine); a direct URL "
    "has no index to fall back on: to take the package from an index instead, write "
    "`{name}==VERSION` (with the index under `indexes:` if it is not PyPI)"
)


_GIT_HINT = (
    "check the repository URL and the ref (and that its server is reachable from this "
    "machine); to take the package from an index instead, write `{name}==VERSION`"
)


class DirectFiles:
    def __init__(self, cache: Path) -> None:
        self._cache = cache

    def lock(self, requirement: DirectUrl) -> tuple[PythonPackage, Path]:
        """Download a direct URL requirement's file: the lock's entry, and the verified copy."""
        if d.is_vcs(requirement.url):
            return self._lock_git(requirement)
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
        filename = d.local_filename(package.name, package.url, package.version)
        cached = self._cached(digest, filename)
        if cached.is_file() and sha256_file(cached) == digest:
            pass
        elif d.is_vcs(package.url):
            self._git_sdist(package.name, package.url, (digest,), "envd.lock", cached)
        else:
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

    def _lock_git(self, requirement: DirectUrl) -> tuple[PythonPackage, Path]:
        what = f"{requirement.where}: `{requirement.requirement}`"
        try:
            repo, ref = d.git_parts(requirement.url)
        except d.DirectUrlProblem as exc:
            raise LockError(f"{what}: {exc.message}", hint=exc.hint) from None
        hint = _GIT_HINT.format(name=requirement.name)
        commit = ref if d.is_commit(ref) else git.resolve_ref(repo, ref, what=what, hint=hint)
        url = d.git_locked_url(repo, commit)
        incoming = self._cache / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=incoming) as tmp:
            path, version = self._git_sdist(
                requirement.name, url, requirement.sha256, requirement.where, Path(tmp) / "sdist"
            )
            digest = sha256_file(path)
            kept = self._keep(path, digest, d.sdist_filename(requirement.name, version))
        return PythonPackage(requirement.name, version, (f"sha256:{digest}",), "", url), kept

    def _git_sdist(
        self, name: str, url: str, expected: tuple[str, ...], where: str, dest: Path
    ) -> tuple[Path, str]:
        """The sdist envd makes of a commit's tree, at `dest` (checked against `expected`)."""
        repo, commit = d.git_parts(url)
        what = f"{where}: {name} at {url}"
        hint = _GIT_HINT.format(name=name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            tar = Path(tmp) / "tree.tar"
            versions: list[str] = []

            def prefix_of(pyproject: str) -> str:
                version = d.static_version(pyproject)
                wheel = f"{name.replace('-', '_')}-VERSION-py3-none-any.whl"
                if version is None:
                    raise LockError(
                        f"{what}: its pyproject.toml has no static `[project] version`, which "
                        "envd needs to name the sdist it makes of the commit",
                        hint="build a wheel of that commit and name it by URL "
                        f"(`{name} @ https://host/{wheel}`)",
                    )
                versions.append(version)
                return d.sdist_filename(name, version).removesuffix(".tar.gz") + "/"

            git.archive(repo, commit, tar, prefix_of, what=what, hint=hint)
            version = versions[0]
            if tar.stat().st_size > urls.MAX_BYTES:
                raise LockError(
                    f"{what}: the commit's tree is larger than {urls.MAX_BYTES} bytes, more "
                    "than envd takes for one package",
                    hint="build a wheel of that commit and name it by URL",
                )
            data = d.stored_gzip(tar.read_bytes())
        actual = hashlib.sha256(data).hexdigest()
        if expected and actual not in expected:
            raise urls.UrlDigestMismatch(
                f"{what}: the sdist of that commit has sha256 {actual}, but {expected[0]} "
                "is required",
                hint="the commit's tree gives other bytes than when it was locked (another "
                "git version?): if that is expected, run `envctl lock` again",
            )
        partial = dest.with_name(f".partial-{dest.name}")
        partial.write_bytes(data)
        partial.chmod(0o644)
        os.replace(partial, dest)
        return dest, version

    def _cached(self, digest: str, filename: str) -> Path:
        """`cache/urls/<sha256>/<file name>`, both parts checked: they come from envd.lock."""
        if not _HEX64.fullmatch(digest):
            raise UnsafeName(f"envd.lock: `{digest[:80]}` is not a sha256 digest; refused")
        return safenames.child(self._cache / digest, filename, "envd.lock: a direct URL's file")

    def _keep(self, path: Path, digest: str, filename: str) -> Path:
        kept = self._cached(digest, filename)
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, kept)
        return kept
