"""A layer tar read in large blocks: the members a layer summary needs, as `tarfile` gives them.

`tarfile`'s stream mode reads 10 KiB at a time through two layers of buffers and copies every
byte several times; a file's contents here are handed out as views of 1 MiB reads. Headers
are parsed by `tarfile.TarInfo.frombuf` and the GNU long-name and pax rules below are
tarfile's own, in its order, so every member reads as tarfile reads it. Members this reader
does not take (sparse files, global pax headers, types tarfile does not know) leave the rest
of the archive, from that member's first header on, to tarfile: `rest`.

Pure: the only I/O is reading the stream passed in.
"""

from __future__ import annotations

import re
import struct
import tarfile
from collections.abc import Iterator
from typing import IO, cast

BLOCK = tarfile.BLOCKSIZE
READ_SIZE = 1 << 20
ENCODING, ERRORS = "utf-8", "surrogateescape"

# Members read here; tarfile skips the data blocks of the regular ones only.
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_OTHER = (
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
)
_LONG = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_PAX_NUMBERS = {"size": int, "uid": int, "gid": int, "mtime": float}
_OCTAL = re.compile(rb" *([0-7]*) *")
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")


class _Unsupported(Exception):
    """A member tarfile is left to read (from its first header on)."""


class _Rest:
    """The bytes already read past, then the rest of the stream."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            data, self._head = bytes(self._head) + self._stream.read(), memoryview(b"")
            return data
        data, self._head = bytes(self._head[:size]), self._head[size:]
        return data


def _block(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarReader:
    """`next()` gives the next member's TarInfo (None at the end of the archive), `data()` its
    contents (a regular file's; read them before the next `next()`). Errors are tarfile's:
    ReadError where tarfile raises one, and an archive that ends in a bad header ends there,
    as in tarfile. `max_header` bounds GNU long-name and pax headers (`too_large` is raised)."""

    def __init__(
        self,
        stream: IO[bytes],
        max_header: int,
        too_large: type[Exception],
        read_size: int = READ_SIZE,
    ) -> None:
        self._stream = stream
        self._max_header = max_header
        self._too_large = too_large
        self._read_size = read_size
        self._buf = b""
        self._pos = 0  # in _buf
        self._base = 0  # the stream offset of _buf[0]
        self._eof = False
        self._next_header = 0  # stream offset of the next member's first header
        self._data_left = 0  # the current member's bytes not yet handed out
        self.rest: IO[bytes] | None = None  # set when tarfile is to read the rest

    # ------------------------------------------------------------ bytes

    def _offset(self) -> int:
        return self._base + self._pos

    def _more(self) -> bool:
        if self._eof:
            return False
        data = self._stream.read(self._read_size)
        if not data:
            self._eof = True
            return False
        self._base += self._pos
        self._buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else data
        self._pos = 0
        return True

    def _take(self, size: int) -> bytes:
        """Up to `size` bytes (fewer only at the end of the stream)."""
        while len(self._buf) - self._pos < size and self._more():
            pass
        data = self._buf[self._pos : self._pos + size]
        self._pos += len(data)
        return data

    def _skip_to(self, offset: int) -> None:
        while self._offset() < offset:
            if self._pos >= len(self._buf) and not self._more():
                raise tarfile.ReadError("unexpected end of data")
            self._pos = min(len(self._buf), self._pos + offset - self._offset())

    def data(self) -> Iterator[memoryview]:
        """The current member's contents, as views of the blocks read."""
        while self._data_left:
            if self._pos >= len(self._buf) and not self._more():
                raise tarfile.ReadError("unexpected end of data")
            n = min(len(self._buf) - self._pos, self._data_left)
            view = memoryview(self._buf)[self._pos : self._pos + n]
            self._pos += n
            self._data_left -= n
            yield view

    # ------------------------------------------------------------ members

    def next(self) -> tarfile.TarInfo | None:
        if self.rest is not None:
            return None
        self._data_left = 0
        self._skip_to(self._next_header)
        raw: list[bytes] = []
        try:
            info = self._member(raw)
        except _Unsupported:
            rest = _Rest(b"".join(raw) + self._buf[self._pos :], self._stream)
            self.rest = cast(IO[bytes], rest)
            return None
        if info is not None:
            data_at = self._offset()
            regular = info.type in _REGULAR
            self._data_left = info.size if regular else 0
            self._next_header = data_at + (_block(info.size) if regular else 0)
        return info

    def _member(self, raw: list[bytes]) -> tarfile.TarInfo | None:
        extensions: list[tuple[bytes, object]] = []
        while True:
            at = self._offset()
            block = self._take(BLOCK)
            raw.append(block)
            try:
                info = frombuf(block)
                if info.type in _LONG or info.type == tarfile.XHDTYPE:
                    if info.size > self._max_header:
                        raise self._too_large(
                            f"a tar header of {info.size} bytes is over the bound"
                        )
                    payload = self._take(_block(info.size))
                    raw.append(payload)
                    value = payload if info.type in _LONG else _pax(payload)
                    extensions.append((info.type, value))
                    continue
            except tarfile.HeaderError as exc:
                return self._bad_header(exc, at, bool(extensions))
            if (info.type not in _REGULAR and info.type not in _OTHER) or info.size < 0:
                raise _Unsupported
            for kind, extension in reversed(extensions):  # the first header's word is last
                _apply(info, kind, extension)
            return info

    @staticmethod
    def _bad_header(exc: tarfile.HeaderError, at: int, following: bool) -> tarfile.TarInfo | None:
        """What tarfile makes of a header it cannot read: an error after a long-name or pax
        header, or at the start of the archive (an all-zero block there ends it); the end of
        the archive anywhere else."""
        if following:
            raise tarfile.ReadError(str(exc)) from None
        kind = type(exc).__name__  # (tarfile's HeaderError kinds are not in its stubs)
        if at == 0 and kind != "EOFHeaderError":
            empty = kind == "EmptyHeaderError"
            raise tarfile.ReadError("empty file" if empty else str(exc)) from None
        return None


class MemberStream:
    """`read(size)` over a member's contents (`TarReader.data()`): at most `size` bytes a read,
    as they were read from the archive (b"" at the end)."""

    def __init__(self, views: Iterator[memoryview]) -> None:
        self._views = views
        self._pending = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            rest = bytes(self._pending) + b"".join(self._views)
            self._pending = memoryview(b"")
            return rest
        if not self._pending:
            self._pending = next(self._views, memoryview(b""))
        data, self._pending = bytes(self._pending[:size]), self._pending[size:]
        return data


def frombuf(block: bytes) -> tarfile.TarInfo:
    """`tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")`, with the common header
    (octal numbers, the unsigned checksum right, not sparse) read in one unpack; any other
    header is tarfile's to read (and to refuse)."""
    if len(block) != BLOCK:
        return tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
    fields = _HEADER.unpack(block)
    numbers: list[int] = []
    for raw in (fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], *fields[11:13]):
        match = _OCTAL.fullmatch(raw.partition(b"\0")[0])
        if match is None:
            return tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
        numbers.append(int(match.group(1) or b"0", 8))
    mode, uid, gid, size, mtime, chksum, devmajor, devminor = numbers
    kind = fields[7]
    if kind == tarfile.GNUTYPE_SPARSE or chksum != 256 + sum(block) - sum(block[148:156]):
        return tarfile.TarInfo.frombuf(block, ENCODING, ERRORS)
    info = tarfile.TarInfo(_nts(fields[0]))
    info.mode, info.uid, info.gid, info.size, info.mtime = mode, uid, gid, size, mtime
    info.chksum, info.type, info.linkname = chksum, kind, _nts(fields[8])
    info.uname, info.gname = _nts(fields[9]), _nts(fields[10])
    info.devmajor, info.devminor = devmajor, devminor
    prefix = _nts(fields[13])
    if info.type == tarfile.AREGTYPE and info.name.endswith("/"):
        info.type = tarfile.DIRTYPE
    if info.isdir():
        info.name = info.name.rstrip("/")
    if prefix and info.type not in tarfile.GNU_TYPES:
        info.name = prefix + "/" + info.name
    return info


def _nts(field: bytes) -> str:
    return field.partition(b"\0")[0].decode(ENCODING, ERRORS)


def _pax(buf: bytes) -> dict[str, str]:
    """A pax extended header's records, as tarfile reads them (a record of length 0 makes the
    header invalid; reading stops at the first record that does not parse)."""
    if re.search(rb"\d+ hdrcharset=([^\n]+)\n", buf) is not None:
        raise _Unsupported  # (tarfile decodes it strictly)
    records: dict[str, str] = {}
    pos = 0
    while (match := _PAX_RECORD.match(buf, pos)) is not None:
        length, keyword = int(match.group(1)), match.group(2)
        if length == 0:
            raise tarfile.HeaderError("invalid header")  # (tarfile: InvalidHeaderError)
        value = buf[match.end(2) + 1 : match.start(1) + length - 1]
        key = _decode(keyword)
        if key.startswith("GNU.sparse."):
            raise _Unsupported
        records[key] = _decode(value)
        pos += length
    return records


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8", "strict")
    except UnicodeDecodeError:
        return value.decode(ENCODING, ERRORS)


def _apply(info: tarfile.TarInfo, kind: bytes, value: object) -> None:
    if kind == tarfile.XHDTYPE:
        assert isinstance(value, dict)
        for keyword, text in value.items():
            if keyword not in tarfile.PAX_FIELDS:
                continue
            field: object = text
            if keyword in _PAX_NUMBERS:
                try:
                    field = _PAX_NUMBERS[keyword](text)
                except ValueError:
                    field = 0
            if keyword == "path":
                field = text.rstrip("/")
            setattr(info, keyword, field)
        return
    assert isinstance(value, bytes)
    if kind == tarfile.GNUTYPE_LONGNAME:
        info.name = _nts(value)
    else:
        info.linkname = _nts(value)
    if info.isdir():
        info.name = info.name.removesuffix("/")
