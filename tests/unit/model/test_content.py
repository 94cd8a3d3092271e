"""The filesystem manifest of an image, from synthetic in-memory layer tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from envd.errors import NotFound, VerificationError
from envd.gateways.engine import ImageInfo, SavedImage, read_saved_image
from envd.model.content import (
    MAX_DPKG_STATUS,
    ContentError,
    Manifest,
    canonical_bytes,
    content_hash,
    manifest_from_tars,
    merge,
    summarise_layer,
    summary_from_json,
    summary_to_json,
)
from envd.model.inventory import (
    Change,
    DebianPackage,
    Distribution,
    debian_packages,
    diff_manifests,
    file_owners,
    python_distributions,
    resolve_dirs,
)
from envd.services.content import ContentHasher


@dataclass
class M:
    """One tar member: kind is file, dir, symlink, hardlink, fifo or char."""

    name: str | bytes
    data: bytes = b""
    kind: str = "file"
    mode: int = 0o644
    target: str = ""
    mtime: int = 0


def tar_bytes(members: Iterable[M], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tar:
        for m in members:
            name = m.name if isinstance(m.name, str) else m.name.decode("utf-8", "surrogateescape")
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = m.mode, m.mtime
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "char": tarfile.CHRTYPE,
            }[m.kind]
            info.linkname = m.target
            if m.kind == "char":
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return buf.getvalue()


def manifest(*layers: list[M]) -> Manifest:
    return manifest_from_tars(io.BytesIO(tar_bytes(layer)) for layer in layers)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BASE = [
    M("./", kind="dir", mode=0o755),
    M("etc/", kind="dir", mode=0o755),
    M("etc/os-release", b"ID=debian\n"),
    M("usr/lib/python3/six.py", b"six = 1\n"),
    M("opt/data/", kind="dir", mode=0o755),
    M("opt/data/a.txt", b"a"),
    M("opt/data/sub/b.txt", b"b"),
    M("bin/sh", b"#!shell", mode=0o755),
    M("bin/bash", kind="hardlink", target="bin/sh"),
    M("usr/bin/python3", kind="symlink", target="python3.11"),
    M("run/fifo", kind="fifo"),
]


def test_regular_files_dirs_symlinks_hardlinks_and_fifos() -> None:
    m = manifest(BASE)
    assert m.entries["/etc/os-release"].sha256 == sha(b"ID=debian\n")
    assert m.entries["/etc/os-release"].size == 10
    assert m.entries["/etc"].kind == "dir" and m.entries["/etc"].mode == 0o755
    assert m.entries["/"].kind == "dir"
    assert m.entries["/usr/bin/python3"].kind == "symlink"
    assert m.entries["/usr/bin/python3"].target == "python3.11"
    # a hardlink is its target's content, mode and owner
    assert m.entries["/bin/bash"] == m.entries["/bin/sh"]
    assert m.entries["/bin/bash"].sha256 == sha(b"#!shell")
    assert m.entries["/run/fifo"].kind == "fifo"


def test_whiteout_deletes_a_file_and_a_directory_from_lower_layers() -> None:
    upper = [M("opt/data/.wh.a.txt"), M("etc/.wh.os-release"), M("opt/.wh.data")]
    m = manifest(BASE, upper)
    assert "/etc/os-release" not in m.entries
    assert not [p for p in m.entries if p.startswith("/opt/data")]
    assert "/opt/data/.wh.a.txt" not in m.entries  # whiteouts are markers, not files
    assert "/etc" in m.entries


def test_whiteout_hides_lower_only_so_the_same_layer_can_recreate() -> None:
    upper = [M("etc/.wh.os-release"), M("etc/os-release", b"ID=other\n")]
    assert manifest(BASE, upper).entries["/etc/os-release"].sha256 == sha(b"ID=other\n")


def test_opaque_directory_hides_lower_children_but_keeps_its_own() -> None:
    upper = [
        M("opt/data/", kind="dir", mode=0o700),
        M("opt/data/.wh..wh..opq"),
        M("opt/data/new.txt", b"new"),
    ]
    m = manifest(BASE, upper)
    under = sorted(p for p in m.entries if p.startswith("/opt/data/"))
    assert under == ["/opt/data/new.txt"]
    assert m.entries["/opt/data"].mode == 0o700


def test_a_file_replacing_a_directory_drops_its_children() -> None:
    m = manifest(BASE, [M("opt/data", b"now a file")])
    assert m.entries["/opt/data"].kind == "file"
    assert not [p for p in m.entries if p.startswith("/opt/data/")]


def test_a_file_edited_in_a_later_layer_shows_the_new_content() -> None:
    m = manifest(BASE, [M("usr/lib/python3/six.py", b"six = 2\n")])
    assert m.entries["/usr/lib/python3/six.py"].sha256 == sha(b"six = 2\n")
    assert content_hash(m) != content_hash(manifest(BASE))


def test_mode_only_change_changes_the_hash_and_is_a_mode_change() -> None:
    base, chmod = manifest(BASE), manifest(BASE, [M("bin/sh", b"#!shell", mode=0o700)])
    assert content_hash(base) != content_hash(chmod)
    assert [c.kind for c in diff_manifests(base, chmod) if c.path == "/bin/sh"] == ["mode"]


def test_one_changed_byte_changes_the_hash() -> None:
    edited = [
        M(m.name, m.data.replace(b"ID=debian", b"ID=debiam"), m.kind, m.mode, m.target)
        for m in BASE
    ]
    assert content_hash(manifest(BASE)) != content_hash(manifest(edited))


def test_timestamps_and_tar_order_do_not_change_the_hash() -> None:
    later = [M(m.name, m.data, m.kind, m.mode, m.target, mtime=1_700_000_000) for m in BASE]
    reordered = [later[0], *reversed(later[1:8]), *later[8:]]  # hardlinks after their target
    assert tar_bytes(BASE) != tar_bytes(reordered)
    assert content_hash(manifest(BASE)) == content_hash(manifest(reordered))


def test_excluded_runtime_paths_are_left_out() -> None:
    injected = [
        M(".dockerenv"),
        M("etc/hostname", b"abc123\n"),
        M("etc/hosts", b"127.0.0.1 localhost\n"),
        M("etc/resolv.conf", b"nameserver 1.1.1.1\n"),
        M("proc/", kind="dir"),
        M("dev/null", kind="char"),
        M("sys/kernel", b"x"),
        M("etc/hostname.d/keep", b"not excluded: only the exact path and below"),
    ]
    m = manifest(BASE, injected)
    assert content_hash(manifest(BASE, injected[-1:])) == content_hash(m)
    assert "/etc/hostname.d/keep" in m.entries


def test_the_init_placeholder_hashes_the_same_whatever_mode_the_engine_gave_it() -> None:
    # `--init` leaves an empty mount point in a step's layer: 0755 on Docker 20.10, 0644 on 26.
    docker20 = manifest(BASE, [M("usr/sbin/docker-init", mode=0o755)])
    docker26 = manifest(BASE, [M("usr/sbin/docker-init", mode=0o644)])
    assert content_hash(docker20) == content_hash(docker26)
    assert docker26.entries["/usr/sbin/docker-init"].mode == 0o755
    real = manifest(BASE, [M("usr/sbin/docker-init", b"an init", mode=0o644)])
    assert real.entries["/usr/sbin/docker-init"].mode == 0o644  # a real file keeps its mode


def test_a_podman_step_hashes_as_the_same_step_on_docker() -> None:
    # What each engine's step container leaves in its committed layer beside the step's files.
    merged = [M("sbin", kind="symlink", target="usr/sbin"), *BASE]
    step = [M("opt/venv/bin/python", b"py", mode=0o755)]
    docker = manifest(merged, [*step, M("usr/sbin/docker-init", mode=0o755)])
    podman = manifest(merged, [
        *step,
        M("run/podman-init", mode=0o755),
        M("run/.containerenv", mode=0o755),
        M("etc/mtab", kind="symlink", target="/proc/mounts"),
        M("etc/hosts", mode=0o755),
    ])  # fmt: skip
    assert content_hash(podman) == content_hash(docker)
    assert "/run/podman-init" not in podman.entries and "/etc/mtab" not in podman.entries
    unmerged = manifest(BASE, [M("run/podman-init"), M("run/.containerenv")])
    assert content_hash(unmerged) == content_hash(manifest(BASE, [M("sbin/docker-init")]))


def test_an_mtab_the_image_makes_itself_is_kept_on_podman() -> None:
    own = [M("etc/mtab", kind="symlink", target="/proc/mounts")]
    base = manifest([*BASE, *own], [M("run/.containerenv"), M("opt/x", b"x")])
    assert base.entries["/etc/mtab"].target == "/proc/mounts"  # below Podman's layer: kept
    step = manifest(BASE, [*own, M("opt/x", b"x")])  # no Podman mark: the step made it
    assert "/etc/mtab" in step.entries


def test_non_utf8_names_are_kept_distinct_and_hashed_deterministically() -> None:
    raw = M(b"opt/caf\xe9.txt", b"latin-1 name")
    text = M("opt/caf\u00e9.txt", b"latin-1 name")
    a, b = manifest([raw]), manifest([text])
    assert list(a.entries) == ["/opt/caf\udce9.txt"] and list(b.entries) == ["/opt/caf\u00e9.txt"]
    assert content_hash(a) != content_hash(b)
    assert content_hash(a) == content_hash(manifest([raw]))
    assert b"636166e92e747874" in canonical_bytes(a)  # hex of the raw name bytes
    canonical_bytes(a).decode("utf-8")  # the serialisation itself is valid UTF-8


def test_summaries_survive_json_and_merge_to_the_same_manifest() -> None:
    layers = [
        BASE,
        [
            M("opt/data/.wh.a.txt"),
            M(b"opt/\xff\xfe", b"odd"),
            M("lnk", kind="symlink", target="\udcffx"),
        ],
        [M("opt/data/", kind="dir"), M("opt/data/.wh..wh..opq"), M("opt/data/c", b"c")],
        DEBIAN,
    ]
    fresh = [summarise_layer(io.BytesIO(tar_bytes(layer))) for layer in layers]
    cached = [summary_from_json(summary_to_json(s)) for s in fresh]
    assert cached == fresh
    assert merge(cached) == merge(fresh) == manifest(*layers)
    assert content_hash(merge(cached)) == content_hash(manifest(*layers))


def test_a_damaged_summary_is_an_error_not_a_guess() -> None:
    with pytest.raises(ContentError):
        summary_from_json('{"schema": 1, "entries": [{"kind": "file"}]}')
    with pytest.raises(ContentError):
        summary_from_json('{"schema": 99}')


STATUS = b"""Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library
 continuation line: Version: 9

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
Architecture: all

Package: six-deb
Status: install ok installed
Architecture: all
Version: 1.16.0-4
"""
DEBIAN = [
    M("var/lib/dpkg/status", STATUS),
    M("var/lib/dpkg/info/libc6:amd64.list", b"/.\n/usr\n/usr/lib/libc.so.6\n"),
    M("usr/lib/libc.so.6", b"\x7fELF libc"),
    M(
        "usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA",
        b"Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\nVersion: not-this\n",
    ),
    M(
        "usr/lib/python3/dist-packages/six-1.16.0.dist-info/RECORD",
        b"six.py,sha256=abc,10\nsix-1.16.0.dist-info/METADATA,,\n../../../bin/six-tool,,\n",
    ),
    M("usr/lib/python3/dist-packages/six.py", b"six = 1\n"),
]


def test_readable_lists_come_from_the_same_bytes() -> None:
    m = manifest(BASE, DEBIAN)
    assert debian_packages(m) == [
        DebianPackage("libc6", "2.36-9+deb12u4", "amd64"),
        DebianPackage("six-deb", "1.16.0-4", "all"),
    ]
    dist = "/usr/lib/python3/dist-packages/six-1.16.0.dist-info"
    assert python_distributions(m) == [Distribution("six", "1.16.0", dist)]
    owners = file_owners(m)
    assert owners["/usr/lib/libc.so.6"] == "deb:libc6"
    assert owners["/usr/lib/python3/dist-packages/six.py"] == "python:six"
    assert owners["/usr/bin/six-tool"] == "python:six"  # RECORD paths relative to site-packages
    assert "/" not in owners


def test_owners_follow_a_merged_usr() -> None:
    usrmerge = [
        M("bin", kind="symlink", target="usr/bin"),
        M("usr/bin/ls", b"ls"),
        M("var/lib/dpkg/info/coreutils.list", b"/.\n/bin\n/bin/ls\n"),
    ]
    owners = file_owners(manifest(usrmerge))
    assert owners["/bin/ls"] == owners["/usr/bin/ls"] == "deb:coreutils"
    loop = manifest([M("a", kind="symlink", target="b"), M("b", kind="symlink", target="a")])
    assert resolve_dirs(loop, "/a/x") == "/a/x"


def test_a_deleted_dist_info_takes_its_distribution_off_the_list() -> None:
    gone = [M("usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info")]
    assert python_distributions(manifest(DEBIAN, gone)) == []
    assert debian_packages(manifest(DEBIAN, [M("var/lib/dpkg/.wh.status")])) == []


def test_an_oversized_dpkg_status_is_hashed_but_not_parsed() -> None:
    big = STATUS + b"\n" + b"X" * (MAX_DPKG_STATUS + 1)
    m = manifest([M("var/lib/dpkg/status", big)])
    assert m.entries["/var/lib/dpkg/status"].sha256 == sha(big)
    assert debian_packages(m) == []


def test_diff_names_the_file_its_change_and_its_owner() -> None:
    old = manifest(BASE, DEBIAN)
    new = manifest(
        BASE,
        DEBIAN,
        [
            M("usr/lib/python3/dist-packages/six.py", b"six = 1 # edited\n"),
            M("usr/lib/.wh.libc.so.6"),
            M("usr/bin/python3", kind="symlink", target="python3.12"),
            M("opt/new", b"n"),
        ],
    )
    assert diff_manifests(old, new) == [
        Change("/opt/new", "added"),
        Change("/usr/bin/python3", "symlink"),
        Change("/usr/lib/libc.so.6", "removed", "deb:libc6"),
        Change("/usr/lib/python3/dist-packages/six.py", "modified", "python:six"),
    ]
    assert diff_manifests(old, old) == []


def test_a_layer_that_is_not_a_tar_is_refused() -> None:
    with pytest.raises(ContentError):
        summarise_layer(io.BytesIO(b"{" + b"x" * 600))


def test_huge_pax_headers_are_refused_before_they_are_read() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ContentError):
        summarise_layer(io.BytesIO(buf.getvalue()))


# ------------------------------------------------------------------ docker save archives


def saved_archive(layers: list[bytes], *, oci: bool = False, lie: int | None = None) -> bytes:
    """A `docker save` archive of one image, legacy layout or OCI; `lie` corrupts a diff-id."""
    diff_ids = ["sha256:" + sha(layer) for layer in layers]
    if lie is not None:
        diff_ids[lie] = "sha256:" + "0" * 64
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_hex = sha(config)
    members: dict[str, bytes] = {}
    names = []
    for i, layer in enumerate(layers):
        name = f"blobs/sha256/{sha(layer)}" if oci else f"{i:064x}/layer.tar"
        members[name] = layer
        names.append(name)
    config_name = f"blobs/sha256/{config_hex}" if oci else f"{config_hex}.json"
    members[config_name] = config
    members["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": ["x:y"], "Layers": names}]
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(members):  # the engine writes in name order: layers before manifest
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


@pytest.mark.parametrize("oci", [False, True])
def test_saved_archive_layers_are_read_in_order_and_verified(oci: bool) -> None:
    layers = [tar_bytes(BASE), tar_bytes([M("opt/data/.wh.a.txt")])]
    saved = read_saved_image(io.BytesIO(saved_archive(layers, oci=oci)), summarise_layer)
    assert saved.diff_ids == tuple("sha256:" + sha(layer) for layer in layers)
    assert all(s is not None for s in saved.layers)
    assert merge(s for s in saved.layers if s is not None) == manifest(
        BASE, [M("opt/data/.wh.a.txt")]
    )


@pytest.mark.parametrize("oci", [False, True])
def test_a_layer_that_does_not_match_its_diff_id_is_refused(oci: bool) -> None:
    layers = [tar_bytes(BASE), tar_bytes([M("x", b"y")])]
    with pytest.raises(VerificationError, match="hashes to"):
        read_saved_image(io.BytesIO(saved_archive(layers, oci=oci, lie=1)), summarise_layer)


def test_skipped_layers_are_still_verified_but_not_parsed() -> None:
    layer = tar_bytes([M("big", b"z" * (2 << 20))])  # over the in-memory size for blobs
    archive = saved_archive([layer], oci=True)
    diff_id = "sha256:" + sha(layer)
    saved = read_saved_image(io.BytesIO(archive), summarise_layer, skip={diff_id})
    assert saved.layers == (None,)
    with pytest.raises(VerificationError):
        read_saved_image(
            io.BytesIO(saved_archive([layer], oci=True, lie=0)), summarise_layer, skip={diff_id}
        )


def test_legacy_archive_with_a_layer_saved_as_a_link_to_an_identical_one() -> None:
    layer = tar_bytes([M("same", b"s")])
    diff_id = "sha256:" + sha(layer)
    config = json.dumps({"rootfs": {"diff_ids": [diff_id, diff_id]}}).encode()
    members = {f"{sha(config)}.json": config, f"{1:064x}/layer.tar": layer}
    names = [f"{1:064x}/layer.tar", f"{2:064x}/layer.tar"]
    manifest_json = json.dumps([{"Config": f"{sha(config)}.json", "Layers": names}]).encode()
    members["manifest.json"] = manifest_json
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(names[1])
        link.type, link.linkname = tarfile.SYMTYPE, f"../{1:064x}/layer.tar"
        tar.addfile(link)
    saved = read_saved_image(io.BytesIO(buf.getvalue()), summarise_layer)
    assert saved.diff_ids == (diff_id, diff_id)
    assert saved.image_id == "sha256:" + sha(config)
    assert saved.layers[0] == saved.layers[1] is not None


def test_oci_archive_with_a_gzip_layer_checks_blob_digest_and_diff_id() -> None:
    layer = tar_bytes([M("zipped", b"z")])
    blob = gzip.compress(layer, mtime=0)
    config = json.dumps({"rootfs": {"diff_ids": ["sha256:" + sha(layer)]}}).encode()
    members = {f"blobs/sha256/{sha(blob)}": blob, f"blobs/sha256/{sha(config)}": config}
    members["manifest.json"] = json.dumps(
        [{"Config": f"blobs/sha256/{sha(config)}", "Layers": [f"blobs/sha256/{sha(blob)}"]}]
    ).encode()

    def archive(blob_name: str) -> io.BytesIO:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in sorted(members.items()):
                info = tarfile.TarInfo(name.replace(f"blobs/sha256/{sha(blob)}", blob_name))
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return io.BytesIO(buf.getvalue())

    saved = read_saved_image(archive(f"blobs/sha256/{sha(blob)}"), summarise_layer)
    assert saved.layers[0] is not None and "/zipped" in saved.layers[0].entries
    members["manifest.json"] = members["manifest.json"].replace(sha(blob).encode(), b"f" * 64)
    with pytest.raises(VerificationError, match="does not match its digest"):
        read_saved_image(archive("blobs/sha256/" + "f" * 64), summarise_layer)


class FakeEngine:
    """inspect_image and read_image_layers over in-memory `docker save` archives."""

    def __init__(self) -> None:
        self.archives: dict[str, bytes] = {}
        self.diff_ids: dict[str, tuple[str, ...]] = {}
        self.reads = 0
        self.parsed = 0  # layers handed to read_layer, over every read

    def add(self, ref: str, layers: list[bytes]) -> None:
        self.archives[ref] = saved_archive(layers)
        self.diff_ids[ref] = tuple("sha256:" + sha(layer) for layer in layers)

    def inspect_image(self, ref: str) -> ImageInfo | None:
        if ref not in self.archives:
            return None
        return ImageInfo(
            id=ref, tags=(), labels={}, size=0, repo_digests=(), layers=self.diff_ids[ref]
        )

    def read_image_layers(
        self, image: str, read_layer: Any, skip: Any = (), skip_sizes: Any = ()
    ) -> SavedImage[Any]:
        self.reads += 1

        def counted(stream: Any) -> Any:
            self.parsed += 1
            return read_layer(stream)

        return read_saved_image(io.BytesIO(self.archives[image]), counted, skip, skip_sizes)


def test_content_hasher_caches_each_layer_once(tmp_path: Path) -> None:
    engine = FakeEngine()
    base, top = tar_bytes(BASE), tar_bytes(DEBIAN)
    engine.add("one", [base, top])
    engine.add("two", [base])
    hasher = ContentHasher(engine, tmp_path / "cache")  # type: ignore[arg-type]
    assert hasher.content_hash("one") == content_hash(manifest(BASE, DEBIAN))
    assert engine.reads == 1
    assert hasher.content_hash("two") == content_hash(manifest(BASE))  # its one layer is cached
    assert hasher.content_hash("one") == content_hash(manifest(BASE, DEBIAN))
    assert engine.reads == 1
    files = sorted(f for f in (tmp_path / "cache").iterdir() if f.suffix == ".json")
    assert [f.name for f in files] == sorted(f"{sha(t)}.json" for t in (base, top))
    # Each chain of layers keeps its content hash: a later call merges nothing.
    assert len(list((tmp_path / "cache" / "chains").iterdir())) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    with pytest.raises(NotFound):
        hasher.content_hash("missing")


def test_content_hasher_refuses_an_image_whose_layers_changed_under_it(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.add("img", [tar_bytes(BASE)])
    engine.diff_ids["img"] = ("sha256:" + "1" * 64,)  # what inspect says differs from the bytes
    with pytest.raises(VerificationError, match="changed"):
        ContentHasher(engine, tmp_path).content_hash("img")  # type: ignore[arg-type]


def test_an_idle_hasher_lets_its_merged_manifest_go(tmp_path: Path) -> None:
    """The merged manifest (an image's whole file list) serves the calls of one build, then
    goes: an idle daemon does not hold it. Read again, it comes from the layer cache."""
    engine = FakeEngine()
    engine.add("one", [tar_bytes(BASE), tar_bytes(DEBIAN)])
    now = [100.0]
    hasher = ContentHasher(
        engine,  # type: ignore[arg-type]
        tmp_path / "cache",
        keep_idle_s=30.0,
        clock=lambda: now[0],
    )
    first = hasher.image_manifest("one")
    now[0] += 29.0
    assert not hasher.shed()  # in use: kept
    assert hasher.image_manifest("one") is first
    now[0] += 29.0
    assert not hasher.shed()  # the second call counts as use
    now[0] += 1.0
    assert hasher.shed() and not hasher.shed()
    again = hasher.image_manifest("one")
    assert again is not first and again == first == manifest(BASE, DEBIAN)
    assert engine.reads == 1  # its layers' summaries were cached on disk


def test_a_known_layer_is_not_read_again_in_the_legacy_layout(tmp_path: Path) -> None:
    """The legacy save names layers by v1 id: a cached layer is recognised by its size and
    only hashed, so a new image on a cached base reads its new layer alone."""
    engine = FakeEngine()
    grown = [*DEBIAN, M("opt/big", b"x" * 40_000)]
    base, top = tar_bytes(BASE), tar_bytes(grown)
    assert len(base) != len(top)
    engine.add("base", [base])
    engine.add("child", [base, top])
    hasher = ContentHasher(engine, tmp_path / "cache")  # type: ignore[arg-type]
    hasher.content_hash("base")
    assert engine.parsed == 1
    assert hasher.content_hash("child") == content_hash(manifest(BASE, grown))
    assert engine.parsed == 2  # the new layer only


def test_a_layer_of_the_same_size_as_a_known_one_is_read_after_all(tmp_path: Path) -> None:
    engine = FakeEngine()
    a = tar_bytes([M("etc/one", b"aaaa")])
    b = tar_bytes([M("etc/one", b"bbbb")])
    assert len(a) == len(b) and a != b
    engine.add("a", [a])
    engine.add("ab", [a, b])
    hasher = ContentHasher(engine, tmp_path / "cache")  # type: ignore[arg-type]
    hasher.content_hash("a")
    expected = content_hash(manifest([M("etc/one", b"aaaa")], [M("etc/one", b"bbbb")]))
    assert hasher.content_hash("ab") == expected
    assert engine.reads == 3  # the guess by size was wrong for b: read again, in full


def gzip_saved_archive(layers: list[bytes]) -> bytes:
    """What the containerd image store saves: gzip blobs named by their own digest."""
    blobs = [gzip.compress(layer, mtime=0) for layer in layers]
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in layers]}}
    ).encode()
    members = {f"blobs/sha256/{sha(b)}": b for b in blobs}
    members[f"blobs/sha256/{sha(config)}"] = config
    members["manifest.json"] = json.dumps(
        [
            {
                "Config": f"blobs/sha256/{sha(config)}",
                "Layers": [f"blobs/sha256/{sha(b)}" for b in blobs],
            }
        ]
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


def test_a_known_compressed_layer_is_not_parsed_again(tmp_path: Path) -> None:
    """The containerd store names a layer by its compressed digest: once a layer was read,
    that digest is remembered with its diff-id, so a new image on it parses its new layer
    alone (the known one is still hashed and checked against the config)."""
    engine = FakeEngine()
    base, top = tar_bytes(BASE), tar_bytes(DEBIAN)
    for ref, layers in (("base", [base]), ("child", [base, top])):
        engine.archives[ref] = gzip_saved_archive(layers)
        engine.diff_ids[ref] = tuple("sha256:" + sha(x) for x in layers)
    hasher = ContentHasher(engine, tmp_path / "cache")  # type: ignore[arg-type]
    hasher.content_hash("base")
    assert engine.parsed == 1
    assert hasher.content_hash("child") == content_hash(manifest(BASE, DEBIAN))
    assert engine.parsed == 2 and engine.reads == 2
