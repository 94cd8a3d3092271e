"""Direct URL requirements: parsing, the lock record, the install line, downloads and errors."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.errors import EXIT_REGISTRY, EXIT_VERIFY, LockError, SpecError
from envd.gateways import urls
from envd.gateways.uv import parse_compiled
from envd.model import direct, lockfile, plan
from envd.model.lockfile import PythonPackage, direct_changes
from envd.model.pylock import ArtifactFile, render_pylock
from envd.model.safenames import UnsafeName
from envd.model.spec import DirectUrl
from envd.model.spec_parser import parse_spec
from envd.services.direct import DirectFiles
from tests.fakes.wheels import wheel_bytes, wheel_name
from tests.unit.model.test_lockfile import make_lock

DIGEST = "ab" * 32
WHEEL_URL = "https://files.example.org/w/tiny_pkg-1.2.0-py3-none-any.whl"


def parse(text: str, files: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    files = files or {}

    def read(rel: str) -> str:
        if rel not in files:
            raise FileNotFoundError(rel)
        return files[rel]

    return parse_spec(text, source="/p/envd.yaml", project_dir="/p", read_text=read)


# ---------------------------------------------------------------- envd.yaml and requirements files


def test_a_wheel_url_in_packages_is_taken_with_its_digest_and_line() -> None:
    spec = parse(
        "base: {debian: bookworm}\npackages:\n  - six\n"
        f"  - Tiny.Pkg[extra] @ {WHEEL_URL}#sha256={DIGEST.upper()}\n"
    )
    assert spec.packages[1] == f"Tiny.Pkg[extra] @ {WHEEL_URL}#sha256={DIGEST.upper()}"
    assert spec.direct == (
        DirectUrl(
            "tiny-pkg",
            spec.packages[1],
            f"{WHEEL_URL}#sha256={DIGEST.upper()}",
            (DIGEST,),
            "/p/envd.yaml",
            4,
            "packages[1]",
        ),
    )


def test_a_wheel_url_without_a_digest_allows_any_file() -> None:
    spec = parse(f"base: {{debian: bookworm}}\npackages: ['tiny-pkg @ {WHEEL_URL}']\n")
    assert spec.direct[0].sha256 == () and spec.direct[0].url == WHEEL_URL


def test_a_requirements_file_url_takes_its_hash_options_and_names_the_file_line() -> None:
    spec = parse(
        "base: {debian: bookworm}\nrequirements: r.txt\n",
        {"r.txt": f"six\n# a wheel\ntiny-pkg @ {WHEEL_URL} \\\n    --hash=sha256:{DIGEST}\n"},
    )
    assert [d.name for d in spec.direct] == ["tiny-pkg"]
    found = spec.direct[0]
    assert (found.source, found.line, found.sha256) == ("/p/r.txt", 3, (DIGEST,))
    assert found.where == "/p/r.txt:3"
    assert spec.requirements[1] == f"tiny-pkg @ {WHEEL_URL}"


@pytest.mark.parametrize(
    ("requirement", "expect"),
    [
        ("x @ git+https://github.com/o/x", "only to an exact commit"),
        ("x @ git+https://github.com/o/x@main", "from_source: [x]"),
        ("x @ git+ssh://git@github.com/o/x@" + "a" * 40, "only git over https"),
        ("x @ hg+https://h.org/x", "only git over https"),
        ("x @ git+https://me:tok@github.com/o/x", "must not hold credentials"),
        ("x @ https://user:pw@h.org/x-1.0-py3-none-any.whl", "must not hold credentials"),
        ("x @ file:///opt/x-1.0-py3-none-any.whl", "local path requirement"),
        ("x @ https://h.org/download?id=3", "neither a wheel"),
        ("x @ https://h.org/y-1.0-py3-none-any.whl", "a file of y, not of x"),
        ("x @ https://h.org/x-1.0.tar.gz", "from_source: [x]"),
        ("x @ https://h.org/%2Fetc%2Fx-1.0-py3-none-any.whl", "not a plain file name"),
        ("x @ https://h.org/..%2F..%2Fx-1.0-py3-none-any.whl", "not a plain file name"),
    ],
)
def test_direct_requirements_envd_cannot_lock_are_refused_at_their_line(
    requirement: str, expect: str
) -> None:
    for text, files, where in (
        (f"base: {{debian: bookworm}}\npackages:\n  - '{requirement}'\n", {}, "/p/envd.yaml"),
        (
            "base: {debian: bookworm}\nrequirements: r.txt\n",
            {"r.txt": f"six\n{requirement}\n"},
            "/p/r.txt",
        ),
    ):
        with pytest.raises(SpecError) as info:
            parse(text, files)
        assert (info.value.file, info.value.line) == (where, 3 if where.endswith("yaml") else 2)
        assert expect in f"{info.value.message} {info.value.hint}", info.value.message
        assert info.value.hint


def test_an_sdist_url_is_taken_when_from_source_names_it() -> None:
    spec = parse(
        "base: {debian: bookworm}\nbuild: {from_source: [X]}\n"
        "packages: ['x @ https://h.org/x-1.0.tar.gz']\n"
    )
    assert spec.direct[0].name == "x" and spec.from_source == ("x",)


def test_a_url_in_constraints_is_still_refused() -> None:
    with pytest.raises(SpecError, match="URL requirement"):
        parse(f"base: {{debian: bookworm}}\nconstraints: ['tiny-pkg @ {WHEEL_URL}']\n")


# ---------------------------------------------------------------- pure helpers


def test_the_url_helpers() -> None:
    assert direct.without_fragment(f"{WHEEL_URL}?a=1#sha256={DIGEST}") == f"{WHEEL_URL}?a=1"
    assert direct.fragment_sha256(f"{WHEEL_URL}#egg=x&sha256={DIGEST.upper()}") == DIGEST
    assert direct.fragment_sha256(f"{WHEEL_URL}#md5=00") is None
    assert direct.artifact_of(WHEEL_URL, "Tiny_Pkg") == direct.Artifact(
        "tiny_pkg-1.2.0-py3-none-any.whl", "tiny-pkg", "1.2.0", wheel=True
    )
    assert direct.artifact_of("https://h/a%20b/x-2.0.zip", "x").version == "2.0"
    assert (
        direct.install_requirement("tiny-pkg", WHEEL_URL)
        == "tiny-pkg @ file:///mnt/direct/tiny_pkg-1.2.0-py3-none-any.whl"
    )
    assert direct.with_url('a[x] @ https://h/a.whl ; python_version > "3"', "file:///c/a.whl") == (
        'a[x] @ file:///c/a.whl ; python_version > "3"'
    )


def test_git_helpers() -> None:
    assert direct.git_parts("git+https://h.org/o/r.git@v1.2#egg=r") == (
        "https://h.org/o/r.git",
        "v1.2",
    )
    assert direct.git_parts("git+https://h.org/o/r") == ("https://h.org/o/r", "HEAD")
    assert direct.is_commit("a" * 40) and not direct.is_commit("A" * 40)
    assert direct.static_version('[project]\nname = "r"\nversion = "1.0"\n') == "1.0"
    assert direct.static_version('[project]\nname = "r"\ndynamic = ["version"]\n') is None
    assert direct.static_version("not toml [") is None
    commit = "c" * 40
    url = direct.git_locked_url("https://h.org/o/r", commit)
    assert (
        direct.install_requirement("r-x", url, "1.0") == "r-x @ file:///mnt/direct/r_x-1.0.tar.gz"
    )


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_001])
def test_stored_gzip_is_plain_gzip_and_the_same_bytes_every_time(size: int) -> None:
    import gzip

    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    packed = direct.stored_gzip(data)
    assert gzip.decompress(packed) == data
    assert packed == direct.stored_gzip(data)
    assert len(packed) == 18 + len(data) + 5 * max(1, -(-size // 65535))


def test_a_spec_takes_a_git_requirement_only_with_from_source() -> None:
    spec = parse(
        "base: {debian: bookworm}\nbuild: {from_source: [r]}\n"
        "packages: ['r @ git+https://h.org/o/r@main']\n"
    )
    assert spec.direct[0].url == "git+https://h.org/o/r@main"


# ---------------------------------------------------------------- the lock record


def url_package(digest: str = DIGEST, url: str = WHEEL_URL) -> PythonPackage:
    return PythonPackage("tiny-pkg", "1.2.0", (f"sha256:{digest}",), "", url)


def test_the_lock_records_the_url_and_round_trips() -> None:
    lock = make_lock(python=(*make_lock().python, url_package()))
    text = lockfile.dumps(lock)
    entries = {p["name"]: p for p in json.loads(text)["python"]}
    assert entries["tiny-pkg"]["url"] == WHEEL_URL
    assert "url" not in entries["numpy"]  # index packages are written as they always were
    assert lockfile.loads(text, "envd.lock") == lock


def test_an_index_only_lock_has_the_same_bytes_as_before() -> None:
    text = lockfile.dumps(make_lock())
    assert '"url"' not in text
    assert lockfile.loads(text, "envd.lock") == make_lock()


def test_a_hand_edited_url_is_named() -> None:
    text = lockfile.dumps(make_lock(python=(url_package(),)))
    edited = text.replace(WHEEL_URL, WHEEL_URL.replace("files.", "evil."))
    with pytest.raises(lockfile.LockEdited, match="tiny-pkg"):
        lockfile.loads(edited, "envd.lock")


def test_a_git_package_at_a_commit_round_trips() -> None:
    url = direct.git_locked_url("https://h.org/o/r", "e" * 40)
    lock = make_lock(python=(PythonPackage("r", "1.0", (f"sha256:{DIGEST}",), "", url),))
    assert lockfile.loads(lockfile.dumps(lock), "envd.lock") == lock


@pytest.mark.parametrize(
    "package",
    [
        PythonPackage("r", "1.0", (f"sha256:{DIGEST}",), "", "git+https://h.org/o/r@main"),
        PythonPackage(
            "tiny-pkg", "1.2.0", (f"sha256:{DIGEST}", "sha256:" + "c" * 64), "", WHEEL_URL
        ),
        PythonPackage("tiny-pkg", "1.2.0", (f"sha256:{DIGEST}",), "", f"{WHEEL_URL}#sha256=x"),
        PythonPackage("tiny-pkg", "1.2.0", (f"sha256:{DIGEST}",), "", "file:///tmp/x.whl"),
    ],
)
def test_a_malformed_url_entry_is_refused(package: PythonPackage) -> None:
    lock = make_lock(python=(package,))
    data = json.loads(lockfile.dumps(lock))
    data["integrity"] = []  # (an old lock without a record: the entry itself is checked)
    with pytest.raises(LockError, match="exactly one sha256"):
        lockfile.loads(json.dumps(data), "envd.lock")


@pytest.mark.parametrize(
    "url, version",
    [
        ("https://evil.example/p/%2Fhome%2Fu%2F.bashrc", "1.0"),
        ("https://evil.example/p/..%2F..%2F..%2F.bashrc", "1.0"),
        ("https://evil.example/p/..", "1.0"),
        ("https://evil.example/p/%00x.whl", "1.0"),
        (direct.git_locked_url("https://h.org/o/r", "e" * 40), "1.0/../../../x"),
    ],
)
def test_a_lock_url_or_version_that_names_a_path_is_refused(url: str, version: str) -> None:
    """F2: the file name a lock entry gives is one plain name, never a host path."""
    lock = make_lock(python=(PythonPackage("tiny-pkg", version, (f"sha256:{DIGEST}",), "", url),))
    data = json.loads(lockfile.dumps(lock))
    data["integrity"] = []
    with pytest.raises(UnsafeName, match=r"envd\.lock: python\[0\]: .*not a plain file name"):
        lockfile.loads(json.dumps(data), "envd.lock")
    with pytest.raises(UnsafeName):
        direct.local_filename("tiny-pkg", url, version)


def test_place_refuses_a_crafted_entry_before_downloading(tmp_path: Path) -> None:
    """Even a lock that skipped the loader's check cannot steer `place` outside the cache."""
    from envd.services.direct import DirectFiles

    urls_ = DirectFiles(tmp_path / "cache")
    target = tmp_path / "victim"
    for package in (
        url_package(url="https://e.example/" + str(target).replace("/", "%2F")),
        url_package(digest="../../../" + "a" * 55),
    ):
        with pytest.raises(UnsafeName):
            urls_.place(package, tmp_path / "build")
    assert not target.exists() and not (tmp_path / "build").exists()


def test_the_install_line_is_the_verified_copy_by_hash_and_keys_change_with_the_url() -> None:
    lock = make_lock(python=(url_package(),))
    text = plan.requirements_text(lock)
    assert text == (
        "tiny-pkg @ file:///mnt/direct/tiny_pkg-1.2.0-py3-none-any.whl \\\n"
        f"    --hash=sha256:{DIGEST}\n"
    )

    def packages_key(lock: lockfile.LockFile) -> str:
        return next(s.key for s in plan.make_plan("p", lock).steps if s.name == "packages")

    moved = make_lock(python=(url_package(url=WHEEL_URL.replace("/w/", "/v/")),))
    assert plan.lock_hash(moved) != plan.lock_hash(lock)  # (the image's label says where)
    assert packages_key(moved) == packages_key(lock)  # the same file: the same layer
    other = make_lock(python=(url_package(digest="cd" * 32),))
    assert packages_key(other) != packages_key(lock)


def test_pylock_names_a_direct_url_package_by_its_file_not_an_index() -> None:
    import tomllib

    lock = make_lock(python=(url_package(),))
    text = render_pylock(lock, [ArtifactFile(WHEEL_URL, f"sha256:{DIGEST}")])
    [entry] = tomllib.loads(text)["packages"]
    assert "index" not in entry
    assert entry["wheels"] == [
        {"name": "tiny_pkg-1.2.0-py3-none-any.whl", "url": WHEEL_URL, "hashes": {"sha256": DIGEST}}
    ]


def test_uv_output_takes_direct_packages_as_locked() -> None:
    locked = url_package()
    out = (
        "six==1.17.0 \\\n    --hash=sha256:" + "1" * 64 + "\n    # from https://pypi.org/simple\n"
        "tiny-pkg @ file:///cache/urls/ab/tiny_pkg-1.2.0-py3-none-any.whl \\\n"
        "    --hash=sha256:" + "2" * 64 + "\n"
    )
    packages = parse_compiled(out, (), {"tiny-pkg": locked})
    assert packages == (PythonPackage("six", "1.17.0", ("sha256:" + "1" * 64,)), locked)
    with pytest.raises(LockError, match="only packages from an index"):
        parse_compiled(out, ())


def test_direct_changes_name_a_moved_url_and_a_changed_digest() -> None:
    locked = (url_package(),)

    def wanted(url: str, sha256: tuple[str, ...] = ()) -> tuple[DirectUrl, ...]:
        return (DirectUrl("tiny-pkg", f"tiny-pkg @ {url}", url, sha256, "/p/r.txt", 3),)

    assert direct_changes(locked, wanted(f"{WHEEL_URL}#sha256={DIGEST}", (DIGEST,))) == []
    assert direct_changes(locked, wanted(WHEEL_URL + "?v=2")) == [
        f"tiny-pkg's URL changed: {WHEEL_URL} → {WHEEL_URL}?v=2"
    ]
    [reason] = direct_changes(locked, wanted(WHEEL_URL, ("ef" * 32,)))
    assert "required sha256 changed (/p/r.txt:3)" in reason and "ef" * 32 in reason
    commit = "d" * 40
    git_locked = (url_package(url=f"git+https://h.org/r@{commit}"),)

    def git_wanted(ref: str) -> tuple[DirectUrl, ...]:
        url = f"git+https://h.org/r@{ref}"
        return (DirectUrl("tiny-pkg", f"tiny-pkg @ {url}", url, (), "/p/envd.yaml", 5),)

    assert direct_changes(git_locked, git_wanted("main")) == []  # a branch: its locked commit
    assert direct_changes(git_locked, git_wanted(commit)) == []
    assert "URL changed" in direct_changes(git_locked, git_wanted("e" * 40))[0]
    assert "URL changed" in direct_changes(locked, git_wanted("main"))[0]  # was https
    elsewhere = f"tiny-pkg @ {WHEEL_URL} ; sys_platform == 'win32'"
    assert direct_changes((), (DirectUrl("tiny-pkg", elsewhere, WHEEL_URL, (), "/p/e", 1),)) == []
    index_pin = (dataclasses.replace(url_package(), url=""),)
    assert "1.2.0 from an index" in direct_changes(index_pin, wanted(WHEEL_URL))[0]


# ---------------------------------------------------------------- downloads


class Files:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets = 0
        files = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.gets += 1
                body = files.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def files() -> Iterator[Files]:
    served = Files()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_fetch_streams_to_the_destination_with_its_digest(files: Files, tmp_path: Path) -> None:
    files.files["/a.whl"] = b"x" * 3_000_000
    got = urls.fetch(files.url("/a.whl"), tmp_path / "d" / "a.whl", what="w", hint="h")
    assert got.size == 3_000_000 and got.sha256 == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert got.path.read_bytes() == files.files["/a.whl"]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["a.whl"]


def test_fetch_refuses_a_file_over_the_limit_and_keeps_nothing(
    files: Files, tmp_path: Path
) -> None:
    files.files["/big.whl"] = b"x" * 5000
    with pytest.raises(urls.UrlUnreachable, match="more than envd downloads") as info:
        urls.fetch(files.url("/big.whl"), tmp_path / "big.whl", what="w", hint="h", limit=4096)
    assert info.value.exit_code == EXIT_REGISTRY
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_a_wrong_digest_naming_both(files: Files, tmp_path: Path) -> None:
    files.files["/a.whl"] = b"abc"
    actual = hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(urls.UrlDigestMismatch) as info:
        urls.fetch(
            files.url("/a.whl"), tmp_path / "a.whl", what="r.txt:3", hint="h", expected=(DIGEST,)
        )
    assert actual in info.value.message and DIGEST in info.value.message
    assert info.value.message.startswith("r.txt:3: ")
    assert info.value.exit_code == EXIT_VERIFY
    assert list(tmp_path.iterdir()) == []


def test_fetch_says_a_missing_or_refused_url_is_a_url(files: Files, tmp_path: Path) -> None:
    with pytest.raises(urls.UrlUnreachable, match="HTTP 404") as info:
        urls.fetch(files.url("/none.whl"), tmp_path / "x.whl", what="envd.yaml:5", hint="fix")
    assert "not a package index" in info.value.message and info.value.hint == "fix"
    port = files.server.server_address[1]
    files.server.server_close()  # nothing listens there now
    with pytest.raises(urls.UrlUnreachable, match="cannot be reached"):
        urls.fetch(f"http://127.0.0.1:{port}/x.whl", tmp_path / "x.whl", what="w", hint="h")
    assert list(tmp_path.iterdir()) == []


def requirement_for(url: str, sha256: tuple[str, ...] = ()) -> DirectUrl:
    return DirectUrl("tiny-pkg", f"tiny-pkg @ {url}", url, sha256, "/p/envd.yaml", 6)


def test_direct_files_lock_then_place_from_the_cache(files: Files, tmp_path: Path) -> None:
    body = wheel_bytes("tiny-pkg", "1.2.0")
    digest = hashlib.sha256(body).hexdigest()
    files.files["/" + wheel_name("tiny-pkg", "1.2.0")] = body
    url = files.url("/" + wheel_name("tiny-pkg", "1.2.0"))
    cache = DirectFiles(tmp_path / "cache")
    package, kept = cache.lock(requirement_for(f"{url}#sha256={digest}", (digest,)))
    assert package == PythonPackage("tiny-pkg", "1.2.0", (f"sha256:{digest}",), "", url)
    assert kept == tmp_path / "cache" / digest / wheel_name("tiny-pkg", "1.2.0")
    assert kept.read_bytes() == body

    del files.files["/" + wheel_name("tiny-pkg", "1.2.0")]  # the server is gone: the cache has it
    placed = cache.place(package, tmp_path / "run" / "direct")
    assert placed.read_bytes() == body and files.gets == 1

    kept.write_bytes(b"corrupted")  # a damaged copy is never used: fetched again, and checked
    (tmp_path / "run" / "direct" / placed.name).unlink()
    with pytest.raises(urls.UrlUnreachable, match="HTTP 404"):
        cache.place(package, tmp_path / "run" / "direct")
    files.files["/" + wheel_name("tiny-pkg", "1.2.0")] = b"tampered"
    with pytest.raises(urls.UrlDigestMismatch) as info:
        cache.place(package, tmp_path / "run" / "direct")
    assert digest in info.value.message
    assert hashlib.sha256(b"tampered").hexdigest() in info.value.message
    assert not (tmp_path / "run" / "direct" / placed.name).exists()


def test_direct_files_lock_names_the_requirement_and_where(files: Files, tmp_path: Path) -> None:
    url = files.url("/tiny_pkg-1.2.0-py3-none-any.whl")
    with pytest.raises(urls.UrlUnreachable) as info:
        DirectFiles(tmp_path).lock(requirement_for(url))
    assert info.value.message.startswith(f"/p/envd.yaml:6: `tiny-pkg @ {url}`: the direct URL")
    assert "tiny-pkg==VERSION" in (info.value.hint or "")
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == []


def test_resolve_ref_finds_branches_and_tags_and_names_a_missing_one(tmp_path: Path) -> None:
    import subprocess

    from envd.gateways import git

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode().strip()

    run("init", "-q", "-b", "main")
    run("commit", "-q", "--allow-empty", "-m", "one")
    first = run("rev-parse", "HEAD")
    run("tag", "-a", "v1", "-m", "v1")  # annotated: the commit, not the tag object
    run("commit", "-q", "--allow-empty", "-m", "two")
    second = run("rev-parse", "HEAD")
    repo = str(tmp_path)
    assert git.resolve_ref(repo, "main", what="w", hint="h") == second
    assert git.resolve_ref(repo, "v1", what="w", hint="h") == first
    assert git.resolve_ref(repo, "HEAD", what="w", hint="h") == second
    with pytest.raises(git.GitUnreachable, match="no branch or tag `nope`") as info:
        git.resolve_ref(repo, "nope", what="envd.yaml:4", hint="h")
    assert info.value.exit_code == EXIT_REGISTRY
    with pytest.raises(git.GitUnreachable, match="failed"):
        git.resolve_ref(str(tmp_path / "missing"), "main", what="w", hint="h")
