"""Direct URL requirements on the real engine: a wheel served on 127.0.0.1, locked by URL and
sha256, built with hash checking and imported inside; tampering and unreachable URLs refused."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Envctl
from tests.fakes.wheels import sdist_bytes, wheel_bytes, wheel_name

pytestmark = pytest.mark.integration


class Served:
    """Files served on 127.0.0.1 from memory: set, replace or remove them during a test."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append(self.path)
                body = served.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    files = Served()
    thread = threading.Thread(target=files.server.serve_forever, daemon=True)
    thread.start()
    yield files
    files.server.shutdown()
    files.server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def project(shared: Envctl, name: str, packages: list[str], extra: str = "") -> Path:
    path = shared.cwd / name
    path.mkdir()
    lines = "".join(f"  - {p}\n" for p in packages)
    (path / "envd.yaml").write_text(
        f'version: 1\nname: {name}\nbase: {{debian: bookworm}}\npython: "3.11"\n'
        f"packages:\n{lines}{extra}"
    )
    return path


def python_entries(path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    data = json.loads((path / "envd.lock").read_text())
    return {p["name"]: p for p in data["python"]}


def url_cache(shared: Envctl) -> Path:
    return Path(shared.env["ENVD_CACHE"]) / "urls"


def test_a_wheel_by_url_is_locked_built_and_imported(shared: Envctl, served: Served) -> None:
    body = wheel_bytes("urlpkg-one", "0.3.1", body="VALUE = 'served'\n", requires=("six",))
    digest = hashlib.sha256(body).hexdigest()
    served.files["/w/" + wheel_name("urlpkg-one", "0.3.1")] = body
    url = served.url("/w/" + wheel_name("urlpkg-one", "0.3.1"))
    path = project(shared, "urlone", [f"urlpkg-one @ {url}#sha256={digest}"])

    out = shared.ok("lock", str(path))
    assert "wrote" in out
    entries = python_entries(path)
    assert entries["urlpkg-one"] == {
        "name": "urlpkg-one",
        "version": "0.3.1",
        "hashes": [f"sha256:{digest}"],
        "index": "",
        "url": url,
    }
    assert "six" in entries and "url" not in entries["six"]  # its dependency, from PyPI
    assert shared("lock", "--check", str(path)).returncode == 0

    shared.ok("build", str(path))
    value = shared.ok(
        "enter", str(path), "--", "python", "-c", "import urlpkg_one, six; print(urlpkg_one.VALUE)"
    )
    assert value.strip() == "served"
    freeze = shared.ok("enter", str(path), "--", "python", "-m", "pip", "show", "urlpkg-one")
    assert "Version: 0.3.1" in freeze

    # A changed URL (and a changed required digest) is drift that `lock --check` names.
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace(f"{url}#", f"{url}?v=2#"))
    check = shared("lock", "--check", str(path))
    assert check.returncode == 5, check.stderr
    assert "urlpkg-one" in check.stderr
    other = "0" * 64
    (path / "envd.yaml").write_text(spec.replace(digest, other))
    check = shared("lock", "--check", str(path))
    assert check.returncode == 5 and "urlpkg-one" in check.stderr, check.stderr
    # Locking it then: the served file's digest is not the one required; both are named.
    before = (path / "envd.lock").read_bytes()
    proc = shared("lock", str(path))
    assert proc.returncode == 9, proc.stderr
    assert digest in proc.stderr and other in proc.stderr
    assert (path / "envd.lock").read_bytes() == before


def test_an_unreachable_url_is_named_as_a_url_and_the_lock_kept(
    shared: Envctl, served: Served
) -> None:
    body = wheel_bytes("urlpkg-two", "1.0")
    served.files["/two/" + wheel_name("urlpkg-two", "1.0")] = body
    good = served.url("/two/" + wheel_name("urlpkg-two", "1.0"))
    path = project(shared, "urltwo", [f"urlpkg-two @ {good}"])
    shared.ok("lock", str(path))
    before = (path / "envd.lock").read_bytes()
    spec = (path / "envd.yaml").read_text()

    refused = f"http://127.0.0.1:{closed_port()}/urlpkg_two-1.0-py3-none-any.whl"
    missing = served.url("/gone/urlpkg_two-1.0-py3-none-any.whl")
    for url, why in ((refused, "cannot be reached"), (missing, "HTTP 404")):
        (path / "envd.yaml").write_text(spec.replace(good, url))
        proc = shared("lock", str(path))
        assert proc.returncode == 8, proc.stderr
        assert why in proc.stderr, proc.stderr
        assert "direct URL" in proc.stderr and "not a package index" in proc.stderr
        assert f"urlpkg-two @ {url}" in proc.stderr  # the requirement, as envd reads it
        assert f"{path / 'envd.yaml'}:6: `urlpkg-two @ {url}`" in proc.stderr  # where it is written
        assert "urlpkg-two==VERSION" in proc.stderr  # how to take it from an index instead
        assert (path / "envd.lock").read_bytes() == before


def test_a_tampered_file_is_refused_by_the_build(shared: Envctl, served: Served) -> None:
    name = wheel_name("urlpkg-three", "2.0")
    served.files["/t/" + name] = wheel_bytes("urlpkg-three", "2.0")
    path = project(shared, "urlthree", [f"urlpkg-three @ {served.url('/t/' + name)}"])
    shared.ok("lock", str(path))
    locked = python_entries(path)["urlpkg-three"]["hashes"][0].removeprefix("sha256:")

    # Another machine (no cached copy) while the server now serves other bytes.
    served.files["/t/" + name] = wheel_bytes("urlpkg-three", "2.0", body="VALUE = 'evil'\n")
    evil = hashlib.sha256(served.files["/t/" + name]).hexdigest()
    shutil.rmtree(url_cache(shared) / locked)
    proc = shared("build", str(path))
    assert proc.returncode == 9, proc.stderr
    assert locked in proc.stderr and evil in proc.stderr, proc.stderr
    assert not (url_cache(shared) / evil).exists()  # nothing unverified is kept


def test_an_sdist_by_url_needs_from_source(shared: Envctl, served: Served) -> None:
    path = project(shared, "urlsdist", [f"urlpkg-four @ {served.url('/urlpkg_four-1.0.tar.gz')}"])
    proc = shared("lock", str(path))
    assert proc.returncode == 1, proc.stderr
    assert "sdist" in proc.stderr and "from_source: [urlpkg-four]" in proc.stderr
    assert not (path / "envd.lock").exists()


def test_an_sdist_by_url_is_built_in_its_own_step_when_from_source_names_it(
    shared: Envctl, served: Served
) -> None:
    body = sdist_bytes("urlpkg-five", "1.4", body="VALUE = 'built'\n")
    served.files["/s/urlpkg_five-1.4.tar.gz"] = body
    url = served.url("/s/urlpkg_five-1.4.tar.gz")
    path = project(
        shared, "urlfive", [f"urlpkg-five @ {url}"], "build: {from_source: [urlpkg-five]}\n"
    )
    shared.ok("lock", str(path))
    entry = python_entries(path)["urlpkg-five"]
    assert (entry["version"], entry["url"]) == ("1.4", url)
    assert entry["hashes"] == [f"sha256:{hashlib.sha256(body).hexdigest()}"]
    out = shared.ok(
        "enter", str(path), "--", "python", "-c", "import urlpkg_five as m; print(m.VALUE)"
    )
    assert out.strip() == "built"


def test_a_changed_hash_in_a_requirements_file_is_drift(shared: Envctl, served: Served) -> None:
    body = wheel_bytes("urlpkg-six", "0.1")
    digest = hashlib.sha256(body).hexdigest()
    served.files["/r/" + wheel_name("urlpkg-six", "0.1")] = body
    url = served.url("/r/" + wheel_name("urlpkg-six", "0.1"))
    path = project(shared, "urlsix", ["six"], "requirements: requirements.txt\n")
    (path / "requirements.txt").write_text(f"# pinned\nurlpkg-six @ {url} --hash=sha256:{digest}\n")
    shared.ok("lock", str(path))
    assert python_entries(path)["urlpkg-six"]["url"] == url
    assert shared("lock", "--check", str(path)).returncode == 0
    other = "1" * 64
    (path / "requirements.txt").write_text(f"# pinned\nurlpkg-six @ {url} --hash=sha256:{other}\n")
    check = shared("lock", "--check", str(path))
    assert check.returncode == 5, check.stderr
    assert f"{path / 'requirements.txt'}:2" in check.stderr and other in check.stderr


def git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A bare repository served over git's dumb HTTP protocol on 127.0.0.1 (a plain server)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def commit_version(work: Path, bare: Path, version: str, value: str) -> str:
    (work / "vcspkg").mkdir(exist_ok=True)
    (work / "vcspkg" / "__init__.py").write_text(f"VALUE = {value!r}\n")
    (work / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4,<4"]\nbuild-backend = "flit_core.buildapi"\n'
        f'\n[project]\nname = "vcspkg"\nversion = "{version}"\ndescription = "a test"\n'
    )
    git("add", "-A", cwd=work)
    git("commit", "-qm", version, cwd=work)
    git("push", "-q", str(bare), "HEAD:refs/heads/main", cwd=work)
    git("update-server-info", cwd=bare)
    return git("rev-parse", "HEAD", cwd=work)


def test_a_git_requirement_is_locked_to_its_commit_and_built_from_an_sdist_of_it(
    shared: Envctl, git_server: tuple[str, Path], tmp_path: Path
) -> None:
    base, served = git_server
    work, bare = tmp_path / "work", served / "vcspkg.git"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    first = commit_version(work, bare, "0.7", "first")
    url = f"git+{base}/vcspkg.git@main"

    refused = project(shared, "vcsoff", [f"vcspkg @ {url}"])
    proc = shared("lock", str(refused))
    assert proc.returncode == 1 and "from_source: [vcspkg]" in proc.stderr, proc.stderr

    path = project(shared, "vcsone", [f"vcspkg @ {url}"], "build: {from_source: [vcspkg]}\n")
    shared.ok("lock", str(path))
    entry = python_entries(path)["vcspkg"]
    assert entry["url"] == f"git+{base}/vcspkg.git@{first}"  # the branch, as its commit
    assert entry["version"] == "0.7" and len(entry["hashes"]) == 1
    out = shared.ok("enter", str(path), "--", "python", "-c", "import vcspkg; print(vcspkg.VALUE)")
    assert out.strip() == "first"

    # The branch moves on: the lock keeps its commit, and is still in sync with envd.yaml.
    commit_version(work, bare, "0.8", "second")
    assert shared("lock", "--check", str(path)).returncode == 0
    assert python_entries(path)["vcspkg"]["url"].endswith(first)
    # Pinning another commit in envd.yaml is drift.
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("@main", f"@{'0' * 40}"))
    check = shared("lock", "--check", str(path))
    assert check.returncode == 5 and "vcspkg" in check.stderr, check.stderr
    proc = shared("lock", str(path))  # no such commit there: named, the lock kept
    assert proc.returncode == 8, proc.stderr
    assert f"{path / 'envd.yaml'}:6" in proc.stderr and "vcspkg" in proc.stderr
    (path / "envd.yaml").write_text(spec)

    # The same commit gives the same sdist anywhere: without the cache it is made again.
    digest = entry["hashes"][0].removeprefix("sha256:")
    shutil.rmtree(url_cache(shared) / digest)
    again = project(
        shared,
        "vcstwo",
        [f"vcspkg @ git+{base}/vcspkg.git@{first}"],
        "build: {from_source: [vcspkg]}\n",
    )
    shared.ok("lock", str(again))
    assert python_entries(again)["vcspkg"]["hashes"] == entry["hashes"]
