"""A crafted envd.lock cannot write outside envd's cache (SECURITY-FINDINGS F2): a direct URL
whose last path segment decodes to an absolute path or `..` is refused by `build` and by the
watcher's background build, before anything is downloaded, with nothing written on the host."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Envctl
from tests.fakes.wheels import wheel_bytes, wheel_name
from tests.integration.events import EventStream
from tests.integration.test_direct_urls import Served, project

pytestmark = pytest.mark.integration

PAYLOAD = b"echo pwned\n"


@pytest.fixture(scope="module")
def files() -> Iterator[Served]:
    served = Served()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


def forge(path: Path, old_url: str, new_url: str, sha256: str) -> None:
    """What an attacker with push access commits: envd.lock's entry for the package now names
    `new_url` and the payload's sha256, envd.yaml untouched (so the lock is not stale), and the
    integrity record dropped (it is an unkeyed hash: it could as well be recomputed)."""
    data = json.loads((path / "envd.lock").read_text())
    for package in data["python"]:
        if package.get("url") == old_url:
            package["url"] = new_url
            package["hashes"] = [f"sha256:{sha256}"]
    data.pop("integrity", None)
    (path / "envd.lock").write_text(json.dumps(data, indent=2))


def locked(shared: Envctl, files: Served, name: str) -> tuple[Path, str]:
    body = wheel_bytes(name, "1.0", body="X = 1\n")
    files.files["/w/" + wheel_name(name, "1.0")] = body
    url = files.url("/w/" + wheel_name(name, "1.0"))
    path = project(shared, name, [f"{name} @ {url}#sha256={hashlib.sha256(body).hexdigest()}"])
    shared.ok("lock", str(path))
    return path, url


@pytest.mark.parametrize("shape", ["absolute", "climbing"])
def test_a_lock_url_naming_a_host_path_is_refused_by_build(
    shared: Envctl, files: Served, tmp_path: Path, shape: str
) -> None:
    target = tmp_path / "victim" / ".bashrc"
    name = f"evil-{shape}"
    path, url = locked(shared, files, name)
    if shape == "absolute":
        segment = quote(str(target), safe="")
    else:  # cache/urls/<sha>/ is 4+ levels below /; climb far enough to reach the root
        segment = quote("../" * 40 + str(target).lstrip("/"), safe="")
    evil = files.url(f"/w/{segment}")
    files.files[f"/w/{segment}"] = PAYLOAD
    forge(path, url, evil, hashlib.sha256(PAYLOAD).hexdigest())
    before = list(files.requests)

    proc = shared("build", str(path))

    assert proc.returncode == 9, proc.stderr
    assert "not a plain file name" in proc.stderr and "envd.lock" in proc.stderr
    assert "internal error" not in proc.stderr
    assert not target.exists() and not target.parent.exists()
    assert files.requests == before  # refused before anything was downloaded


def test_the_watcher_refuses_a_crafted_lock_without_any_command(
    shared: Envctl, files: Served, tmp_path: Path
) -> None:
    target = tmp_path / "victim" / "planted"
    path, url = locked(shared, files, "evil-watched")
    shared.ok("build", str(path))  # registered and watched (watch: true is the default)
    segment = quote(str(target), safe="")
    files.files[f"/w/{segment}"] = PAYLOAD
    with EventStream(shared) as events:
        forge(path, url, files.url(f"/w/{segment}"), hashlib.sha256(PAYLOAD).hexdigest())
        events.wait("project.stale", lambda e: "not a plain file name" in e["message"])
    reason = next(
        p.get("state_reason", "")
        for p in json.loads(shared.ok("--json", "ls"))["projects"]
        if p["path"] == str(path)
    )
    assert "not a plain file name" in reason
    time.sleep(1)
    assert not target.exists() and not target.parent.exists()
    assert not any(segment in r for r in files.requests)
