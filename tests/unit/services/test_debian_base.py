"""Debian bases without mmdebstrap or an engine: dpkg status, cache keys, caching, staleness.

Also the subprocess helper mmdebstrap runs through (timeouts, streaming, no stray processes).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from envd.errors import EnvdError, LockError, LockStale
from envd.gateways import mmdebstrap, proc
from envd.gateways.proc import CommandError
from envd.model.lockfile import BaseLock, DebianPackage
from envd.progress import Progress
from envd.services import debian_base

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries: used by nearly all programs.
 Version: not-a-field

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u4

Package: python3
Status: install ok installed
Architecture: amd64
Version: 3.11.2-1+b1
Conffiles:
 /etc/python3/debian_config 1234abcd

Package: old-config
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0
"""


def test_dpkg_status_gives_installed_packages_only() -> None:
    assert mmdebstrap.parse_dpkg_status(STATUS) == (
        DebianPackage("libc6", "2.36-9+deb12u4", "amd64"),
        DebianPackage("libc6", "2.36-9+deb12u4", "i386"),
        DebianPackage("python3", "3.11.2-1+b1", "amd64"),
    )


def test_dpkg_status_empty() -> None:
    assert mmdebstrap.parse_dpkg_status("") == ()


def write_rootfs(path: Path, status: str = STATUS, member: str = "./var/lib/dpkg/status") -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in ((member, status.encode()), ("./etc/debian_version", b"12.5\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("member", ["./var/lib/dpkg/status", "var/lib/dpkg/status"])
def test_list_packages_reads_the_tarball(tmp_path: Path, member: str) -> None:
    write_rootfs(tmp_path / "root.tar", member=member)
    packages = mmdebstrap.list_packages(tmp_path / "root.tar")
    assert [p.name for p in packages] == ["libc6", "libc6", "python3"]


def test_list_packages_refuses_a_tarball_without_dpkg(tmp_path: Path) -> None:
    write_rootfs(tmp_path / "root.tar", member="./etc/other")
    with pytest.raises(EnvdError, match="not a Debian root filesystem"):
        mmdebstrap.list_packages(tmp_path / "root.tar")


# ------------------------------------------------------------ cache key


def test_cache_key_ignores_order_and_duplicates() -> None:
    key = debian_base.cache_key("bookworm", "http://deb.debian.org/debian", ["python3", "git"])
    assert key == debian_base.cache_key(
        "bookworm", "http://deb.debian.org/debian/", ["git", "python3", "git"]
    )
    assert len(key) == 64 and int(key, 16) >= 0


def test_cache_key_changes_with_every_input() -> None:
    mirror = "http://deb.debian.org/debian"
    keys = {
        debian_base.cache_key("bookworm", mirror, ["python3"]),
        debian_base.cache_key("trixie", mirror, ["python3"]),
        debian_base.cache_key("bookworm", "http://mirror.example/debian", ["python3"]),
        debian_base.cache_key("bookworm", mirror, ["python3", "git"]),
        debian_base.cache_key("bookworm", mirror, ["python3"], arch="arm64"),
    }
    assert len(keys) == 5


def test_cache_key_is_the_same_in_another_process() -> None:
    code = (
        "from envd.services.debian_base import cache_key; "
        "print(cache_key('bookworm', 'http://deb.debian.org/debian', ['git', 'python3']))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert out == debian_base.cache_key(
        "bookworm", "http://deb.debian.org/debian", ["python3", "git"]
    )


def test_include_list_always_has_python_and_certificates() -> None:
    assert debian_base.include_list(["git", "python3"]) == [
        "ca-certificates",
        "git",
        "python3",
        "python3-venv",
    ]


# ------------------------------------------------------------ mmdebstrap gateway


@dataclass
class FakeRun:
    """Stands in for proc.run inside the mmdebstrap gateway."""

    fail_with: str = ""
    interrupt: bool = False
    calls: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> proc.Completed:
        self.calls.append((list(argv), dict(kwargs["env"])))
        out = Path(argv[-2])
        write_rootfs(out)
        if self.interrupt:
            raise KeyboardInterrupt
        if self.fail_with:
            raise CommandError("failed", argv=argv, returncode=25, output=self.fail_with)
        return proc.Completed(0, "", "")


def test_build_tarball_runs_mmdebstrap_reproducibly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(mmdebstrap, "run", fake)
    out = tmp_path / "base.tar"
    mmdebstrap.build_tarball(
        "bookworm", ["python3", "git", "python3"], "http://m/debian", out, source_date_epoch=42
    )
    argv, env = fake.calls[0]
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv and "--format=tar" in argv
    assert "--include=git,python3" in argv
    assert argv[-3:-2] == ["bookworm"] and argv[-1] == "http://m/debian"
    assert any(a.startswith("--customize-hook=") and "etc/hostname" in a for a in argv)
    assert env["SOURCE_DATE_EPOCH"] == "42"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.tar"]


def test_build_tarball_passes_the_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(mmdebstrap, "run", fake)
    mmdebstrap.build_tarball(
        "bookworm", ["python3"], "http://m", tmp_path / "b.tar", source_date_epoch=1, arch="arm64"
    )
    assert "--architectures=arm64" in fake.calls[0][0]


UNKNOWN = """\
I: installing remaining packages inside the chroot...
Reading package lists...
Building dependency tree...
E: Unable to locate package no-such-package-xyz
E: setup failed: E: apt-get ... install ca-certificates no-such-package-xyz failed
E: mmdebstrap failed to run
"""


@pytest.mark.parametrize("interrupt", [False, True])
def test_failed_or_interrupted_build_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: bool
) -> None:
    monkeypatch.setattr(mmdebstrap, "run", FakeRun(fail_with=UNKNOWN, interrupt=interrupt))
    expected = KeyboardInterrupt if interrupt else CommandError
    with pytest.raises(expected):
        mmdebstrap.build_tarball(
            "bookworm", ["x"], "http://m", tmp_path / "b.tar", source_date_epoch=1
        )
    assert list(tmp_path.iterdir()) == []


def test_unknown_package_is_named_with_its_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mmdebstrap, "run", FakeRun(fail_with=UNKNOWN))
    with pytest.raises(CommandError) as caught:
        mmdebstrap.build_tarball(
            "bookworm", ["no-such-package-xyz"], "http://m", tmp_path / "b.tar", source_date_epoch=1
        )
    err = caught.value
    assert err.message == "Debian package `no-such-package-xyz` is not in bookworm"
    assert err.hint and "system:" in err.hint
    assert err.returncode == 25 and err.argv[0] == "mmdebstrap"
    assert "Unable to locate package" in err.output


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("E: Version '9.9' for 'git' was not found", "git=9.9 is not in bookworm"),
        ("E: Package 'python' has no installation candidate", "`python` is not installable"),
        (
            "E: The repository 'http://m nosuch Release' does not have a Release file.",
            "has no suite `bookworm`",
        ),
        ("W: Failed to fetch: Temporary failure resolving 'm'", "cannot be reached"),
        ("E: Unable to correct problems, you have held broken packages.", "installed together"),
        ("E: something else\nE: mmdebstrap failed to run", "E: mmdebstrap failed to run"),
    ],
)
def test_failures_are_explained(output: str, expected: str) -> None:
    message, hint = mmdebstrap.explain_failure(output, "bookworm", "http://m")
    assert expected in message and hint


# ------------------------------------------------------------ ensure / verify / restore


@dataclass
class FakeImages:
    images: dict[str, dict[str, str]] = field(default_factory=dict)
    imports: list[tuple[str, str, str]] = field(default_factory=list)

    def image_exists(self, ref: str) -> bool:
        return ref in self.images

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        if ref not in self.images:
            return None
        return (self.images[ref].get(debian_base.LABEL_SHA256, ""),)  # the import's diff-id

    def import_tarball(
        self,
        path: str | Path,
        repository: str,
        tag: str,
        labels: Mapping[str, str] | None = None,
        changes: Sequence[str] = (),
    ) -> str:
        assert Path(path).exists()
        self.imports.append((str(path), repository, tag))
        self.images[f"{repository}:{tag}"] = dict(labels or {})
        return "sha256:" + "e" * 64


@dataclass
class FakeBuild:
    """Stands in for mmdebstrap.build_tarball: writes a tiny root filesystem."""

    status: str = STATUS
    calls: list[list[str]] = field(default_factory=list)

    def __call__(
        self, suite: str, include: Sequence[str], mirror: str, out_path: Path, **kw: Any
    ) -> None:
        assert kw["source_date_epoch"] == debian_base.SOURCE_DATE_EPOCH
        self.calls.append(list(include))
        write_rootfs(out_path, self.status)


@pytest.fixture
def build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    fake = FakeBuild()
    monkeypatch.setattr(mmdebstrap, "build_tarball", fake)
    return fake


def ensure(engine: FakeImages, cache: Path, system: Sequence[str] = ("git",)) -> BaseLock:
    return debian_base.ensure_debian_base(
        engine, "bookworm", list(system), "http://m", cache, labels={"envd.test": "1"}
    )


def test_ensure_builds_imports_and_pins(tmp_path: Path, build: FakeBuild) -> None:
    engine = FakeImages()
    lock = ensure(engine, tmp_path)
    assert build.calls == [["ca-certificates", "git", "python3", "python3-venv"]]
    assert lock.kind == "debian" and lock.suite == "bookworm" and lock.mirror == "http://m"
    assert lock.tarball_sha256.startswith("sha256:") and lock.digest == lock.tarball_sha256
    assert lock.reference == f"envd/base-debian:{lock.tarball_sha256[7:19]}"
    assert lock.packages == mmdebstrap.parse_dpkg_status(STATUS)
    assert engine.images[lock.reference] == {
        "envd.test": "1",
        "envd.base.tarball-sha256": lock.tarball_sha256,
        "envd.base.suite": "bookworm",
    }


def test_second_ensure_builds_and_imports_nothing(tmp_path: Path, build: FakeBuild) -> None:
    engine = FakeImages()
    first = ensure(engine, tmp_path)
    assert ensure(engine, tmp_path) == first
    assert len(build.calls) == 1 and len(engine.imports) == 1


def test_cached_tarball_is_imported_again_when_the_image_is_gone(
    tmp_path: Path, build: FakeBuild
) -> None:
    first = ensure(FakeImages(), tmp_path)
    engine = FakeImages()
    assert ensure(engine, tmp_path) == first
    assert len(build.calls) == 1 and len(engine.imports) == 1


def test_a_changed_cached_tarball_is_made_again(tmp_path: Path, build: FakeBuild) -> None:
    first = ensure(FakeImages(), tmp_path)
    [tar] = tmp_path.glob("*.tar")
    tar.write_bytes(tar.read_bytes() + b"\0" * 512)
    assert ensure(FakeImages(), tmp_path) == first
    assert len(build.calls) == 2


def test_a_lost_record_is_made_from_the_tarball(tmp_path: Path, build: FakeBuild) -> None:
    first = ensure(FakeImages(), tmp_path)
    for meta in tmp_path.glob("*.json"):
        meta.unlink()
    assert ensure(FakeImages(), tmp_path) == first
    assert len(build.calls) == 1


def test_refresh_builds_again(tmp_path: Path, build: FakeBuild) -> None:
    engine = FakeImages()
    ensure(engine, tmp_path)
    debian_base.ensure_debian_base(engine, "bookworm", ["git"], "http://m", tmp_path, refresh=True)
    assert len(build.calls) == 2


def test_build_failure_is_a_lock_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise CommandError(
            "Debian package `nope` is not in bookworm",
            argv=["mmdebstrap"],
            returncode=25,
            output="",
            hint="check the name",
        )

    monkeypatch.setattr(mmdebstrap, "build_tarball", fail)
    with pytest.raises(LockError, match="`nope` is not in bookworm") as caught:
        ensure(FakeImages(), tmp_path, ["nope"])
    assert caught.value.hint == "check the name"
    assert not list(tmp_path.glob("*.tar")) and not list(tmp_path.glob("*.json"))


def test_progress_reports_the_build(tmp_path: Path, build: FakeBuild) -> None:
    seen: list[Progress] = []
    debian_base.ensure_debian_base(
        FakeImages(), "bookworm", [], "http://m", tmp_path, progress=seen.append
    )
    assert [p.step for p in seen] == ["base", "base"]
    assert "mmdebstrap" in seen[0].message and "importing" in seen[1].message


def test_package_changes_names_each_change() -> None:
    old = (DebianPackage("a", "1", "amd64"), DebianPackage("b", "1", "amd64"))
    new = (DebianPackage("a", "2", "amd64"), DebianPackage("c", "1", "amd64"))
    assert debian_base.package_changes(old, new) == [
        "a 1 -> 2",
        "b 1 -> (none)",
        "c (none) -> 1",
    ]


def test_verify_accepts_the_locked_base(tmp_path: Path, build: FakeBuild) -> None:
    engine = FakeImages()
    locked = ensure(engine, tmp_path)
    assert debian_base.verify_debian_base(engine, locked, ["git"], tmp_path) == locked


def test_verify_names_packages_that_moved_on(tmp_path: Path, build: FakeBuild) -> None:
    made = ensure(FakeImages(), tmp_path)
    python3 = DebianPackage("python3", "3.11.2-1", "amd64")
    locked = replace(
        made, tarball_sha256="sha256:" + "0" * 64, packages=(*made.packages[:2], python3)
    )
    with pytest.raises(LockStale, match=r"python3 3\.11\.2-1 -> 3\.11\.2-1\+b1") as caught:
        debian_base.verify_debian_base(FakeImages(), locked, ["git"], tmp_path)
    assert caught.value.hint and "envctl lock --upgrade" in caught.value.hint


def test_verify_accepts_other_bytes_with_the_same_packages(
    tmp_path: Path, build: FakeBuild
) -> None:
    made = ensure(FakeImages(), tmp_path)
    locked = replace(made, tarball_sha256="sha256:" + "0" * 64, digest="sha256:" + "0" * 64)
    seen: list[Progress] = []
    again = debian_base.verify_debian_base(
        FakeImages(), locked, ["git"], tmp_path, progress=seen.append
    )
    assert again == made
    assert "has the locked packages" in seen[-1].message


def test_restore_uses_the_image_when_present(tmp_path: Path, build: FakeBuild) -> None:
    engine = FakeImages()
    locked = ensure(engine, tmp_path)
    build.calls.clear()
    assert debian_base.restore_debian_base(engine, locked, ["git"], tmp_path) == locked.reference
    assert build.calls == []


def test_restore_makes_a_removed_base_again(tmp_path: Path, build: FakeBuild) -> None:
    locked = ensure(FakeImages(), tmp_path)
    engine = FakeImages()
    assert debian_base.restore_debian_base(engine, locked, ["git"], tmp_path) == locked.reference
    assert list(engine.images) == [locked.reference]


def test_a_tag_pointing_at_another_image_is_never_trusted(tmp_path: Path, build: FakeBuild) -> None:
    """The lock's base tag moved to a different image: it is imported again from the tarball."""
    engine = FakeImages()
    locked = ensure(engine, tmp_path)
    engine.images[locked.reference] = {debian_base.LABEL_SHA256: "sha256:" + "0" * 64}
    before = len(engine.imports)
    assert debian_base.restore_debian_base(engine, locked, ["git"], tmp_path) == locked.reference
    assert len(engine.imports) == before + 1
    assert engine.image_layers(locked.reference) == (locked.tarball_sha256,)


# ------------------------------------------------------------ proc.run


def test_run_captures_output() -> None:
    done = proc.run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")


def test_run_passes_input() -> None:
    done = proc.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], input="hello"
    )
    assert done.stdout == "HELLO\n"


def test_run_failure_carries_argv_status_and_tail() -> None:
    code = "import sys; [print(i) for i in range(500)]; sys.exit(3)"
    with pytest.raises(CommandError) as caught:
        proc.run([sys.executable, "-c", code])
    err = caught.value
    assert err.returncode == 3 and err.argv[0] == sys.executable
    assert err.output.splitlines()[-1] == "499" and len(err.output.splitlines()) == proc.TAIL_LINES
    assert "exit 3" in err.message and "499" in err.message


def test_run_streams_lines() -> None:
    seen: list[str] = []
    code = "import sys; print('a'); print('b', file=sys.stderr, flush=True); print('c')"
    done = proc.run([sys.executable, "-u", "-c", code], on_line=seen.append)
    assert sorted(seen) == ["a", "b", "c"] and done.stdout.count("\n") == 3


def test_missing_program_is_named() -> None:
    with pytest.raises(EnvdError, match="`no-such-program-xyz` is not installed"):
        proc.run(["no-such-program-xyz"])


@pytest.mark.parametrize("stream", [False, True])
def test_timeout_ends_the_whole_process_group(tmp_path: Path, stream: bool) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell starts a child that would outlive it; the timeout must end both.
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    with pytest.raises(CommandError, match="did not finish within 1s"):
        proc.run(["sh", "-c", script], timeout=1, on_line=(lambda _: None) if stream else None)
    assert time.monotonic() - started < 8
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
