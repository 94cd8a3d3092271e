"""The large-block tar reader reads every member as tarfile's stream mode does: crafted layer
tars (GNU and pax long names, ustar prefixes, hard links, whiteouts, members it leaves to
tarfile, truncated and damaged archives), each read both ways and compared."""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
from typing import Any

import pytest

from envd.model.content import ContentError, normalise, summarise_layer
from envd.model.content_tar import MemberStream, TarReader

Listing = list[tuple[Any, ...]]


def _row(info: tarfile.TarInfo, data: bytes | None) -> tuple[Any, ...]:
    digest = hashlib.sha256(data).hexdigest() if data is not None else ""
    return (
        info.name,
        info.type,
        info.mode,
        info.uid,
        info.gid,
        info.size,
        info.linkname,
        info.devmajor,
        info.devminor,
        digest,
    )


def by_tarfile(archive: bytes) -> Listing | str:
    rows: Listing = []
    try:
        with tarfile.open(
            fileobj=io.BytesIO(archive), mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tar:
            for info in tar:
                member = tar.extractfile(info) if info.isreg() else None
                rows.append(_row(info, member.read() if member is not None else None))
    except tarfile.ReadError:
        return "ReadError"
    return rows


def by_reader(archive: bytes, read_size: int = 1 << 20) -> Listing | str:
    rows: Listing = []
    try:
        reader = TarReader(io.BytesIO(archive), 1 << 20, ContentError, read_size=read_size)
        while (info := reader.next()) is not None:
            data = MemberStream(reader.data()).read() if info.isreg() else None
            rows.append(_row(info, data))
        if reader.rest is not None:  # what the reader leaves: tarfile reads on, as summarise does
            with tarfile.open(
                fileobj=reader.rest, mode="r|", encoding="utf-8", errors="surrogateescape"
            ) as tar:
                for info in tar:
                    member = tar.extractfile(info) if info.isreg() else None
                    rows.append(_row(info, member.read() if member is not None else None))
    except tarfile.ReadError:
        return "ReadError"
    return rows


def build(fmt: int, members: list[tarfile.TarInfo], datas: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8") as tar:
        for info in members:
            data = datas.get(info.name)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = attrs.pop("mode", 0o644)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


LONG_DIR = "usr/lib/python3/dist-packages/" + "a-very-long-folder-name/" * 6
LONG_FILE = LONG_DIR + "module_with_a_long_name.py"


def layer(fmt: int) -> bytes:
    """A bit of everything a layer holds, in one format."""
    datas = {
        "etc/os-release": b'ID=debian\nVERSION_ID="12"\n',
        LONG_FILE: b"print('hi')\n" * 100,
        "big.bin": bytes(range(256)) * 9000,  # 2.2 MiB: spans reads
        "empty": b"",
        "odd": b"x" * 513,
    }
    members = [
        member("etc/", tarfile.DIRTYPE, mode=0o755),
        member("etc/os-release", uid=1000, gid=1000),
        member(LONG_DIR, tarfile.DIRTYPE, mode=0o2775),
        member(LONG_FILE, mode=0o4755),
        member("big.bin"),
        member("empty"),
        member("odd", mode=0o600),
        member("hard", tarfile.LNKTYPE, linkname=LONG_FILE),
        member("soft", tarfile.SYMTYPE, linkname="/" + LONG_FILE + "/../x"),
        member("etc/.wh.gone"),
        member("var/lib/.wh..wh..opq"),
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("fifo", tarfile.FIFOTYPE),
    ]
    return build(fmt, members, datas)


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("read_size", [1 << 20, 512, 700, 4096])
def test_members_read_as_tarfile_reads_them(fmt: int, read_size: int) -> None:
    if fmt == tarfile.USTAR_FORMAT:  # (ustar: names up to 255 bytes, split with a prefix)
        archive = build(
            fmt,
            [member("a/" * 70 + "f"), member("usr/" * 30 + "g", tarfile.SYMTYPE, linkname="f")],
            {"a/" * 70 + "f": b"data"},
        )
    else:
        archive = layer(fmt)
    expected = by_tarfile(archive)
    assert isinstance(expected, list) and len(expected) > 1
    assert by_reader(archive, read_size) == expected


def test_pax_names_ids_and_undecodable_bytes_read_as_tarfile_reads_them() -> None:
    odd = b"caf\xe9/\xff\xfe".decode("utf-8", "surrogateescape")
    members = [
        member(odd, uid=1 << 30, gid=3_000_000),
        member("p/" + "n" * 300, tarfile.DIRTYPE),
        member("q", tarfile.SYMTYPE, linkname="t" * 400),
        member("r", pax_headers={"comment": "x", "SCHILY.xattr.user.k": "v", "mtime": "1.5"}),
    ]
    archive = build(tarfile.PAX_FORMAT, members, {odd: b"1", "r": b"22"})
    expected = by_tarfile(archive)
    assert isinstance(expected, list) and expected[0][0] == odd
    assert by_reader(archive, 700) == expected


def test_members_the_reader_leaves_are_read_by_tarfile_from_their_header_on() -> None:
    before = build(
        tarfile.GNU_FORMAT, [member("a"), member("L" * 150)], {"a": b"1", "L" * 150: b"2"}
    )
    # A global pax header (tarfile writes one first when given pax_headers), then the rest.
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "7"}
    ) as tar:
        tar.addfile(member("g", size=1), io.BytesIO(b"g"))
    # A type tarfile does not know (it reads it as a file), after a GNU long name.
    unknown = build(
        tarfile.GNU_FORMAT, [member("u" * 120, b"Z"), member("z")], {"u" * 120: b"abc", "z": b"4"}
    )
    for middle in (buf.getvalue(), unknown):
        archive = _strip_end(before) + _strip_end(middle) + bytes(1024)
        expected = by_tarfile(archive)
        assert isinstance(expected, list) and len(expected) >= 3
        assert by_reader(archive, 512) == expected


def _strip_end(archive: bytes) -> bytes:
    """The archive without its end-of-archive blocks (to join archives)."""
    end = len(archive)
    while end >= 512 and archive[end - 512 : end] == bytes(512):
        end -= 512
    return archive[:end]


@pytest.mark.parametrize(
    "damage",
    [
        "cut-in-data",
        "cut-at-header",
        "cut-in-header",
        "cut-in-padding",
        "bad-checksum",
        "garbage-after-end",
        "empty",
        "zeros",
        "not-a-tar",
        "cut-after-long-name",
    ],
)
def test_damaged_archives_end_or_fail_as_in_tarfile(damage: str) -> None:
    archive = _strip_end(layer(tarfile.GNU_FORMAT))
    first = 512 + len(b'ID=debian\nVERSION_ID="12"\n')  # etc/ header, os-release header + data
    damaged = {
        "cut-in-data": archive[: 512 + 512 + 10],
        "cut-at-header": archive[: 512 * 3],
        "cut-in-header": archive[: 512 * 3 + 100],
        "cut-in-padding": archive[: 512 + first + 5],
        "bad-checksum": archive[: 512 * 3] + b"\x01" * 512 + archive[512 * 4 :],
        "garbage-after-end": archive + bytes(1024) + b"junk" * 300,
        "empty": b"",
        "zeros": bytes(1024),
        "not-a-tar": b"{" + b"x" * 600,
        "cut-after-long-name": archive[: 512 * 3 + 512 + 512],
    }[damage]
    assert by_reader(damaged, 700) == by_tarfile(damaged)


def test_summaries_are_the_same_whichever_reader_took_the_members() -> None:
    archive = layer(tarfile.GNU_FORMAT)
    unknown = build(tarfile.GNU_FORMAT, [member("u", b"Z"), member("etc/x")], {"u": b"a"})
    mixed = _strip_end(unknown) + archive  # the unknown member first: tarfile reads it all
    fast, slow = summarise_layer(io.BytesIO(archive)), summarise_layer(io.BytesIO(mixed))
    assert set(slow.entries) == set(fast.entries) | {"/u", "/etc/x"}
    assert {p: e for p, e in slow.entries.items() if p in fast.entries} == fast.entries
    assert slow.whiteouts == fast.whiteouts == frozenset({"/etc/gone"})
    assert slow.opaque == fast.opaque == frozenset({"/var/lib"})
    assert fast.entries["/hard"].target == "/" + LONG_FILE
    assert fast.entries["/etc/os-release"].uid == 1000
    assert fast.facts == slow.facts and "/etc/os-release" in fast.facts


def test_a_huge_long_name_header_is_refused_before_it_is_read() -> None:
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 2 << 20
    archive = header.tobuf(tarfile.GNU_FORMAT) + bytes(2 << 20) + bytes(1024)
    with pytest.raises(ContentError):
        summarise_layer(io.BytesIO(archive))


def test_names_normalise_alike_on_the_quick_path_and_the_long_one() -> None:
    def slow(name: str) -> str:
        parts: list[str] = []
        for part in name.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/" + "/".join(parts)

    pieces = ["", ".", "..", "a", ".a", "a.", "b..", "/", "//"]
    names = {"".join(p) for p in itertools.product(pieces, repeat=4)}
    names |= {"/" + n for n in names} | {"./" + n for n in names}
    for name in names:
        assert normalise(name) == slow(name), name
