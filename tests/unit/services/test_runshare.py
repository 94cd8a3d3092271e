"""Issue 26 without an engine: the run artifact's checks, the kept-file store, placing files
in a project, and the registry client against an in-process OCI registry (blobs HEAD before
PUT, manifests, the referrers tag-schema fallback, paged tag lists)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd.errors import RegistryError, VerificationError
from envd.gateways.keptfiles import KeptFiles
from envd.gateways.registry import RegistryClient, Repository, fallback_tag
from envd.model.provenance import build_statement
from envd.model.runartifact import (
    ARTIFACT_TYPE,
    ArtifactRefused,
    RunFile,
    check_files,
    config_json,
    descriptor,
    manifest_json,
    parse_config,
    parse_manifest,
    referrers_index,
)
from envd.model.runrecord import CodeState, RunRecord
from envd.model.safenames import UnsafeName
from envd.services.runpull import place
from envd.services.runrefs import split_run_reference

DATA = b"x0,label\n1.0,1\n"
MODEL = b'{"weights": [1]}\n'


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def record(**changes: object) -> RunRecord:
    fields: dict[str, object] = {
        "id": "abc123def456",
        "project": "p",
        "command": ("python", "-m", "p.train"),
        "started_at": 1_700_000_000.0,
        "ended_at": 1_700_000_010.0,
        "image": "sha256:" + "1" * 64,
        "environment_hash": "sha256:" + "2" * 64,
        "code": CodeState("3" * 40, False, ""),
        "params": {"params.yaml": "lr: 0.5\n"},
        "data": {"data/d.csv": sha(DATA)},
        "outputs": {"models/m.json": sha(MODEL)},
        "metrics": {"accuracy": 0.9},
        "workdir": "",
    }
    fields.update(changes)
    return RunRecord(**fields)  # type: ignore[arg-type]


def files_of(run: RunRecord) -> list[RunFile]:
    params = run.params["params.yaml"].encode()
    return [
        RunFile("params", "params.yaml", "sha256:" + sha(params), len(params)),
        RunFile("data", "data/d.csv", "sha256:" + sha(DATA), len(DATA)),
        RunFile("output", "models/m.json", "sha256:" + sha(MODEL), len(MODEL)),
    ]


def manifest_for(files: list[RunFile]) -> bytes:
    return manifest_json(
        "sha256:" + "4" * 64,
        10,
        files,
        ("sha256:" + "5" * 64, 100, "application/vnd.oci.image.manifest.v1+json"),
        "abc123def456",
        "2026-01-01T00:00:00Z",
    )


# ------------------------------------------------------------------ the artifact


def test_a_manifest_round_trips_with_its_files_and_subject() -> None:
    run = record()
    artifact = parse_manifest(manifest_for(files_of(run)), "reg/p:abc")

    assert [f.path for f in artifact.files] == ["params.yaml", "data/d.csv", "models/m.json"]
    assert artifact.subject == "sha256:" + "5" * 64
    assert json.loads(manifest_for(files_of(run)))["artifactType"] == ARTIFACT_TYPE
    check_files(artifact, run, "reg/p:abc")  # every blob is what the run records


@pytest.mark.parametrize("title", ["../../.bashrc", "/etc/passwd", "data/../../x", ""])
def test_a_title_that_leaves_the_project_is_refused(title: str) -> None:
    files = [RunFile("data", "data/d.csv", "sha256:" + sha(DATA), len(DATA))]
    raw = json.loads(manifest_for(files))
    raw["layers"][0]["annotations"]["org.opencontainers.image.title"] = title

    with pytest.raises((UnsafeName, ArtifactRefused)):
        parse_manifest(json.dumps(raw).encode(), "reg/p:abc")


def test_a_path_named_twice_or_an_unknown_artifact_is_refused() -> None:
    data = RunFile("data", "data/d.csv", "sha256:" + sha(DATA), len(DATA))
    with pytest.raises(ArtifactRefused, match="named twice"):
        parse_manifest(manifest_for([data, data]), "r")
    raw = json.loads(manifest_for([data]))
    raw["artifactType"] = "application/vnd.example+json"
    with pytest.raises(ArtifactRefused, match="not a shared run"):
        parse_manifest(json.dumps(raw).encode(), "r")


def test_a_blob_that_is_not_the_recorded_file_is_refused() -> None:
    run = record()
    files = files_of(run)
    files[1] = RunFile("data", "data/d.csv", "sha256:" + sha(b"other"), 5)

    with pytest.raises(ArtifactRefused, match=r"data file data/d\.csv"):
        check_files(parse_manifest(manifest_for(files), "r"), run, "r")


def test_the_config_gives_the_run_through_the_import_path() -> None:
    run = record(workdir="src")
    statement = build_statement(run, builder_id="https://example.com/b")
    raw = config_json(run, statement, "alice", "2026-01-01T00:00:00Z")

    shared = parse_config(raw, "reg/p:abc", now=1_800_000_000.0)

    assert shared.record.id == run.id and shared.record.origin == "reg/p:abc"
    assert shared.record.data == run.data and shared.record.workdir == "src"
    assert shared.shared_by == "alice"
    with pytest.raises(VerificationError, match="future"):
        parse_config(raw, "reg/p:abc", now=1_600_000_000.0)


def test_the_fallback_index_lists_each_artifact_once() -> None:
    first = descriptor("sha256:" + "a" * 64, 10, "r1")
    second = descriptor("sha256:" + "b" * 64, 10, "r2")
    index = json.loads(referrers_index(json.loads(referrers_index([], first))["manifests"], second))
    again = json.loads(referrers_index(index["manifests"], second))

    assert [m["digest"] for m in again["manifests"]] == [first["digest"], second["digest"]]


def test_run_references() -> None:
    repo, ref = split_run_reference("127.0.0.1:5000/team/p:abc")
    assert (str(repo), ref) == ("127.0.0.1:5000/team/p", "abc")
    repo, ref = split_run_reference("127.0.0.1:5000/team/p@sha256:" + "a" * 64)
    assert ref.startswith("sha256:")


# ------------------------------------------------------------------ kept files


def test_a_kept_output_survives_a_rewrite_in_place(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "models").mkdir(parents=True)
    model = project / "models" / "m.json"
    model.write_bytes(MODEL)
    kept = KeptFiles(tmp_path / "kept")

    assert kept.keep(str(project), {"models/m.json": sha(MODEL)}) == []
    with open(model, "r+b") as file:  # the next run rewrites the same inode
        file.write(b"XX")

    opened = kept.open(sha(MODEL))
    assert opened is not None
    with opened:
        assert opened.read() == MODEL


def test_a_file_changed_since_hashed_or_a_link_is_not_kept(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "changed").write_bytes(b"new bytes")
    (tmp_path / "secret").write_bytes(MODEL)
    os.symlink(tmp_path / "secret", project / "link")
    kept = KeptFiles(tmp_path / "kept")

    missed = kept.keep(str(project), {"changed": sha(b"old bytes"), "link": sha(MODEL)})

    assert sorted(missed) == ["changed", "link"]
    assert not kept.has(sha(MODEL)) and not kept.has(sha(b"old bytes"))


def test_the_store_stays_under_its_budget_oldest_first(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    kept = KeptFiles(tmp_path / "kept", max_bytes=25)
    blobs = [bytes([i]) * 10 for i in range(3)]
    for i, blob in enumerate(blobs):
        (project / str(i)).write_bytes(blob)
        kept.keep(str(project), {str(i): sha(blob)})
        os.utime(kept.path(sha(blob)), (1000 + i, 1000 + i))
    kept.keep(str(project), {})

    assert [kept.has(sha(b)) for b in blobs] == [False, True, True]


def test_gc_removes_what_no_run_names_then_the_oldest_past_the_budget(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    kept = KeptFiles(tmp_path / "kept")
    blobs = [bytes([i]) * 10 for i in range(4)]
    for i, blob in enumerate(blobs):
        (project / str(i)).write_bytes(blob)
        kept.keep(str(project), {str(i): sha(blob)})
    for i, blob in enumerate(blobs[:3]):  # kept long ago; the last one just now
        os.utime(kept.path(sha(blob)), (1000 + i, 1000 + i))
    named = {sha(blobs[1]), sha(blobs[2])}  # blob 0 and 3: no run names them

    assert kept.collect(named, None, dry_run=True) == [(sha(blobs[0]), 10)]
    assert kept.has(sha(blobs[0]))
    assert kept.collect(named, None) == [(sha(blobs[0]), 10)]
    assert [kept.has(sha(b)) for b in blobs] == [False, True, True, True]
    # 30 bytes left, a budget of 20: the oldest named file goes; the fresh one stays
    assert kept.collect(named, 20) == [(sha(blobs[1]), 10)]
    assert [kept.has(sha(b)) for b in blobs] == [False, False, True, True]


# ------------------------------------------------------------------ placing files


def fetched(tmp_path: Path, path: str, raw: bytes) -> tuple[RunFile, Path]:
    source = tmp_path / f"blob-{sha(raw)[:8]}"
    source.write_bytes(raw)
    return RunFile("data", path, "sha256:" + sha(raw), len(raw)), source


def test_a_local_file_that_differs_is_kept_unless_forced(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "data" / "d.csv").write_bytes(b"mine")
    blobs = [fetched(tmp_path, "data/d.csv", DATA), fetched(tmp_path, "models/m.json", MODEL)]

    placed, same, kept = place(str(project), blobs, force=False)

    assert (placed, same, kept) == (["models/m.json"], [], ["data/d.csv"])
    assert (project / "data" / "d.csv").read_bytes() == b"mine"
    placed, same, kept = place(str(project), blobs, force=True)
    assert (placed, same, kept) == (["data/d.csv"], ["models/m.json"], [])
    assert (project / "data" / "d.csv").read_bytes() == DATA


def test_a_link_on_the_way_is_refused_and_nothing_is_written_through_it(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, project / "data")

    with pytest.raises(ArtifactRefused, match=r"data/d\.csv"):
        place(str(project), [fetched(tmp_path, "data/d.csv", DATA)], force=True)
    assert list(outside.iterdir()) == []


# ------------------------------------------------------------------ the registry client


class _Registry(http.server.BaseHTTPRequestHandler):
    """A tiny OCI registry in memory: blobs, monolithic uploads, manifests, paged tags."""

    blobs: dict[str, bytes]
    manifests: dict[str, tuple[bytes, str]]
    requests: list[tuple[str, str]]

    def log_message(self, *args: object) -> None:
        return None

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _route(self) -> tuple[str, str, dict[str, list[str]]]:
        url = urllib.parse.urlparse(self.path)
        self.requests.append((self.command, url.path))
        _, _, rest = url.path.partition("/v2/team/p/")
        kind, _, ref = rest.partition("/")
        return kind, ref, urllib.parse.parse_qs(url.query)

    def do_HEAD(self) -> None:
        kind, ref, _ = self._route()
        found = ref in self.blobs if kind == "blobs" else ref in self.manifests
        self._reply(200 if found else 404)

    def do_GET(self) -> None:
        kind, ref, query = self._route()
        if kind == "blobs" and ref in self.blobs:
            self._reply(200, self.blobs[ref])
        elif kind == "manifests" and ref in self.manifests:
            body, media_type = self.manifests[ref]
            self._reply(200, body, {"Content-Type": media_type})
        elif kind == "tags":
            tags = sorted(t for t in self.manifests if not t.startswith("sha256:"))
            last = query.get("last", [""])[0]
            page = [t for t in tags if t > last][:2]
            headers = {}
            if page and page[-1] != tags[-1]:
                headers["Link"] = f'</v2/team/p/tags/list?n=2&last={page[-1]}>; rel="next"'
            self._reply(200, json.dumps({"tags": page}).encode(), headers)
        else:
            self._reply(404)

    def do_POST(self) -> None:
        self._route()
        self._reply(202, headers={"Location": "/v2/team/p/blobs/uploads/u1"})

    def do_PUT(self) -> None:
        kind, ref, query = self._route()
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if kind == "blobs":
            digest = query["digest"][0]
            if "sha256:" + sha(body) != digest:
                self._reply(400)
                return
            self.blobs[digest] = body
        else:
            entry = (body, self.headers["Content-Type"])
            self.manifests[ref] = entry
            self.manifests["sha256:" + sha(body)] = entry
        self._reply(201)


@pytest.fixture
def oci() -> Iterator[tuple[Repository, type[_Registry]]]:
    handler = type("Handler", (_Registry,), {"blobs": {}, "manifests": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Repository(f"127.0.0.1:{server.server_address[1]}", "team/p"), handler
    finally:
        server.shutdown()
        server.server_close()


def test_a_blob_is_uploaded_once_and_read_back_checked(
    oci: tuple[Repository, type[_Registry]],
) -> None:
    repo, registry = oci
    client = RegistryClient(purpose="share")
    digest = "sha256:" + sha(DATA)
    seen: list[int] = []

    assert not client.has_blob(repo, digest)
    client.upload_blob(repo, digest, len(DATA), io.BytesIO(DATA), seen.append)

    assert client.has_blob(repo, digest) and sum(seen) == len(DATA)
    assert client.get_blob(repo, digest) == DATA
    registry.blobs[digest] = b"tampered"
    with pytest.raises(Exception, match="does not match"):
        client.get_blob(repo, digest)


def test_a_file_is_uploaded_from_where_it_stands_and_a_wrong_one_is_refused(
    oci: tuple[Repository, type[_Registry]], tmp_path: Path
) -> None:
    repo, registry = oci
    client = RegistryClient(purpose="share")
    raw = os.urandom(40 << 20)  # more than one sendfile(2) call's worth
    path = tmp_path / "big"
    path.write_bytes(b"header" + raw)
    digest = "sha256:" + sha(raw)
    seen: list[int] = []

    with open(path, "rb") as body:
        body.seek(len(b"header"))
        client.upload_blob(repo, digest, len(raw), body, seen.append)

    assert registry.blobs[digest] == raw and sum(seen) == len(raw) and len(seen) > 1
    with open(path, "rb") as body, pytest.raises(RegistryError, match="HTTP 400"):
        client.upload_blob(repo, "sha256:" + sha(b"other"), len(raw), body)


def test_referrers_fall_back_to_the_tag_schema_index(
    oci: tuple[Repository, type[_Registry]],
) -> None:
    repo, registry = oci
    client = RegistryClient(purpose="share")
    subject = "sha256:" + "5" * 64
    added = descriptor("sha256:" + "a" * 64, 10, "r1")
    client.put_manifest(
        repo,
        fallback_tag(subject),
        referrers_index([], added),
        "application/vnd.oci.image.index.v1+json",
    )

    found, api = client.referrers(repo, subject)

    assert not api and [d["digest"] for d in found] == [added["digest"]]
    assert ("GET", f"/v2/team/p/referrers/{subject}") in registry.requests


def test_every_tag_is_listed_across_pages(oci: tuple[Repository, type[_Registry]]) -> None:
    repo, registry = oci
    for tag in ("a", "b", "c", "d", "e"):
        registry.manifests[tag] = (b"{}", "application/json")

    assert RegistryClient().tags(repo) == ["a", "b", "c", "d", "e"]


def test_json_nested_past_the_recursion_limit_is_refused_not_a_crash() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ArtifactRefused):
        parse_manifest(deep, "r")
    with pytest.raises(ArtifactRefused):
        parse_config(b'{"statement": ' + deep + b"}", "r", now=1_800_000_000.0)


# ------------------------------------------------------------------ sharing, with fakes


class _FakeRuns:
    def __init__(self, run: RunRecord) -> None:
        self.run = run

    def record(self, run_id: str) -> RunRecord:
        return self.run


class _FakeProjects:
    def __init__(self, path: Path) -> None:
        self.path = path

    def resolve_registered(self, ref: str) -> object:
        return type("Row", (), {"path": str(self.path), "name": ref})()

    def spec(self, row: object) -> object:
        raise RuntimeError("no envd.yaml here")


def test_a_file_changed_and_not_kept_is_named_and_nothing_is_uploaded(
    oci: tuple[Repository, type[_Registry]], tmp_path: Path
) -> None:
    from envd.services.runshare import RunSharing

    repo, registry = oci
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "models").mkdir()
    (project / "data" / "d.csv").write_bytes(DATA)
    (project / "models" / "m.json").write_bytes(b"overwritten by a later run")
    sharing = RunSharing(
        _FakeRuns(record()),  # type: ignore[arg-type]
        _FakeProjects(project),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        RegistryClient(purpose="share"),
        KeptFiles(tmp_path / "kept"),
        tmp_path / "cache",
        tmp_path / "tmp",
        lambda: "https://example.com/b",
    )

    with pytest.raises(VerificationError, match=r"output models/m\.json") as refused:
        sharing.share("abc123def456", str(repo), "alice", lambda _: None)

    assert "data" not in str(refused.value).partition("kept them:")[2]
    assert [m for m, _ in registry.requests if m in ("POST", "PUT")] == []


class _FakeEngine:
    """Holds one image; `push` stores its manifest in the in-memory registry."""

    def __init__(self, registry: type[_Registry], run: RunRecord) -> None:
        self.registry = registry
        self.run = run
        self.pushed: list[str] = []

    def inspect_image(self, ref: str) -> object:
        labels = {"envd.fingerprint.environment": self.run.environment_hash}
        return type("Info", (), {"labels": labels, "id": ref})()

    def tag(self, image: str, repository: str, tag: str) -> None:
        return None

    def push(self, reference: str, on_progress: object = None) -> object:
        from envd.gateways.engine import PushResult

        body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
        digest = "sha256:" + sha(body)
        self.registry.manifests[digest] = (body, "application/vnd.oci.image.manifest.v1+json")
        self.pushed.append(reference)
        return PushResult(digest, 1, 0)


def test_an_older_runs_kept_output_is_shared_once_and_found_from_its_subject(
    oci: tuple[Repository, type[_Registry]], tmp_path: Path
) -> None:
    from envd.services.runshare import RunSharing

    repo, registry = oci
    run = record()
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "models").mkdir()
    (project / "data" / "d.csv").write_bytes(DATA)
    (project / "models" / "m.json").write_bytes(MODEL)
    kept = KeptFiles(tmp_path / "kept")
    kept.keep(str(project), {"models/m.json": sha(MODEL)})
    (project / "models" / "m.json").write_bytes(b"a newer run's model")
    sharing = RunSharing(
        _FakeRuns(run),  # type: ignore[arg-type]
        _FakeProjects(project),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        _FakeEngine(registry, run),  # type: ignore[arg-type]
        RegistryClient(purpose="share"),
        kept,
        tmp_path / "cache",
        tmp_path / "tmp",
        lambda: "https://example.com/b",
    )
    events: list[object] = []

    first = sharing.share(run.id, str(repo), "alice", events.append)
    before = len(registry.requests)
    second = sharing.share(run.id, str(repo), "alice", events.append)

    assert (first.uploaded, first.skipped) == (3, 0)  # params, data, the kept model
    assert (second.uploaded, second.skipped) == (0, 3)
    assert registry.blobs["sha256:" + sha(MODEL)] == MODEL
    blob_puts = [p for m, p in registry.requests[before:] if m == "PUT" and "/blobs/" in p]
    assert len(blob_puts) <= 1  # at most the config (it says when it was shared)
    manifest, _ = registry.manifests[run.id]
    artifact = parse_manifest(manifest, "r")
    found, api = RegistryClient().referrers(repo, artifact.subject)
    assert not api and [d["annotations"]["dev.envd.run.id"] for d in found] == [run.id]
    assert any(getattr(e, "step", "") == "upload" for e in events)


def test_a_damaged_kept_copy_is_refused_named_and_removed(
    oci: tuple[Repository, type[_Registry]], tmp_path: Path
) -> None:
    from envd.services.runshare import RunSharing

    repo, registry = oci
    run = record()
    project = tmp_path / "p"
    (project / "data").mkdir(parents=True)
    (project / "models").mkdir()
    (project / "data" / "d.csv").write_bytes(DATA)
    (project / "models" / "m.json").write_bytes(MODEL)
    kept = KeptFiles(tmp_path / "kept")
    kept.keep(str(project), {"models/m.json": sha(MODEL)})
    (project / "models" / "m.json").write_bytes(b"a newer run's model")
    damaged = kept.path(sha(MODEL))
    damaged.chmod(0o600)
    damaged.write_bytes(MODEL[:-1] + b"!")  # not hashed again before the upload
    sharing = RunSharing(
        _FakeRuns(run),  # type: ignore[arg-type]
        _FakeProjects(project),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        _FakeEngine(registry, run),  # type: ignore[arg-type]
        RegistryClient(purpose="share"),
        kept,
        tmp_path / "cache",
        tmp_path / "tmp",
        lambda: "https://example.com/b",
    )

    with pytest.raises(VerificationError, match=r"models/m\.json: envd's kept copy"):
        sharing.share(run.id, str(repo), "alice", lambda _: None)

    assert not kept.has(sha(MODEL)) and "sha256:" + sha(MODEL) not in registry.blobs
    assert run.id not in registry.manifests


def test_a_pull_the_disk_cannot_hold_is_refused_before_a_byte_arrives(tmp_path: Path) -> None:
    """Blob sizes are the registry's word: a manifest declaring more than the disk holds is
    refused up front (exit 11), not downloaded until the disk is full."""
    from envd.errors import EXIT_DAEMON, StateError
    from envd.services.runpull import _check_room

    _check_room(tmp_path, 1024, "reg/repo:run")
    with pytest.raises(StateError) as err:
        _check_room(tmp_path, 1 << 60, "reg/repo:run")
    assert err.value.exit_code == EXIT_DAEMON and "nothing pulled" in err.value.message
