"""Files in a project volume on the engine, reached through the warm container that mounts it.

The sibling of engine.py for remote engines (see envd/model/projectsync.py): a labelled volume
per project, a listing of it in one `find` (stat data only), hashes of the few files whose stat
moved (`sha256sum`), streamed tar archives in (`put_archive`, with progress for large files)
and out (`get_archive`), and removals. Commands run as root in the container, so listing and
writing never depend on the caller's uid; files are written owned by the caller.
"""

from __future__ import annotations

import io
import logging
import posixpath
import secrets
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from envd.errors import ContainerError, EnvdError
from envd.gateways.engine import ChunkReader, Engine, engine_error
from envd.model import names
from envd.model.projectsync import (
    FILE,
    MAX_LISTING_BYTES,
    Listing,
    Stat,
    find_script,
    parse_find,
    parse_sha256sum,
)

CHUNK = 1 << 20
log = logging.getLogger(__name__)
VOLUME_ID = names.VOLUME_ID_LABEL
ARGV_BATCH = 500  # paths per `sha256sum`/`rm` exec, far under any ARG_MAX
LISTER_S = 30.0  # a lister unasked this long ends (an idle container is busy no longer)
LISTING_TIMEOUT_S = 120.0  # one listing's answer, once asked
# (path, bytes sent of it, its size): called per chunk of a file being sent or received.
ByteSink = Callable[[str, int, int], None]
# (relative path, member, its bytes or None for a link): one file read from the volume.
MemberSink = Callable[[str, tarfile.TarInfo, IO[bytes] | None], None]


@dataclass(frozen=True)
class Outgoing:
    """One host file or link to write into the volume."""

    relpath: str
    host_path: str
    stat: Stat


class _Lister:
    """An exec in the container that lists the volume each time a line comes on its stdin:
    find_script, then a NUL, a random token, its status and a newline, on its stdout (over
    the attached socket, in the engine's 8-byte frames). A listing then costs the `find`, not
    the start of an exec (as long as the command's own exec on a remote engine). It ends when
    unasked for LISTER_S (its stdin closed): an idle container is held busy no longer."""

    def __init__(
        self, engine: Engine, container: str, workdir: str, on_close: Callable[[], None]
    ) -> None:
        self._engine = engine
        self._container = container
        self._workdir = workdir
        self._on_close = on_close
        self._token = b"envd" + secrets.token_hex(8).encode()
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one listing at a time
        self._sock: Any = None
        self._raw: Any = None
        self._closed = False
        self._deadline = time.monotonic() + LISTER_S

    def start(self) -> None:
        script = (
            f"while read -r _; do ({find_script(self._workdir)}); s=$?; "
            f"printf '\\0'; printf '{self._token.decode()}%d\\n' $s; done"
        )
        try:
            api = self._engine.client.api
            exec_id = api.exec_create(
                self._container, ["sh", "-c", script], stdin=True, stdout=True, stderr=False,
                user="0",
            )["Id"]  # fmt: skip
            raw = api.exec_start(exec_id, socket=True)
            sock = getattr(raw, "_sock", raw)
            sock.settimeout(LISTING_TIMEOUT_S)
        except Exception:  # the one-shot exec lists instead
            self._on_close()
            return
        with self._lock:
            self._raw = raw  # (docker's wrapper, and the HTTP response it keeps)
            if self._closed:
                self._close_socket(sock)
                return
            self._sock = sock
            self._ready.set()
        threading.Thread(target=self._expire, name="envd-lister-ttl", daemon=True).start()

    def _expire(self) -> None:
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(left)
        self._on_close()

    def ask(self) -> tuple[int, bytes, bytes] | None:
        """(status, stdout, b"") of one listing, or None (the caller lists the usual way).
        A listing over MAX_LISTING_BYTES is refused (ContainerError)."""
        if not self._ready.is_set():
            return None  # still starting: not worth the wait
        with self._lock:
            if self._sock is None:
                return None
            self._deadline = time.monotonic() + LISTER_S
            try:
                self._sock.sendall(b"\n")
                return self._answer()
            except _Oversized as exc:
                too_long: _Oversized | None = exc
            except (OSError, ValueError):  # its container stopped, say: no more asking
                log.info("the lister in %s ended; listing with an exec", self._container[:12])
                too_long = None
        self._on_close()
        if too_long is not None:
            raise ContainerError(
                f"the listing of {self._workdir} in container {self._container[:12]} is "
                f"{too_long}; refused (nothing synced)",
                hint="a project with that many files is too large to sync with a remote engine",
            )
        return None

    def _answer(self) -> tuple[int, bytes, bytes]:
        marker = b"\0" + self._token
        raw = bytearray()
        out = bytearray()
        while True:
            while len(raw) >= 8:
                (size,) = struct.unpack_from(">I", raw, 4)
                if len(raw) < 8 + size:
                    break
                if raw[0] == 1:
                    out += raw[8 : 8 + size]
                del raw[: 8 + size]
            if out.endswith(b"\n"):
                at = out.rfind(marker)
                if at >= 0 and out[at + len(marker) : -1].isdigit():
                    if raw:
                        raise ValueError("more than one listing")
                    return int(out[at + len(marker) : -1]), bytes(out[:at]), b""
            if len(out) > MAX_LISTING_BYTES:
                raise _Oversized(f"over {MAX_LISTING_BYTES >> 20} MiB")
            data = self._sock.recv(1 << 16)
            if not data:
                raise ValueError("the lister ended")
            raw += data

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._deadline = 0.0
            sock, self._sock = self._sock, None
        if sock is not None:
            self._close_socket(sock)  # its `read` gets EOF: the exec ends

    def _close_socket(self, sock: Any) -> None:
        for thing in (sock, self._raw, getattr(self._raw, "_response", None)):
            try:
                if thing is not None:
                    thing.close()
            except Exception:
                pass


class _Oversized(Exception):
    pass


class EngineFiles:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._listers: dict[tuple[str, str], _Lister] = {}  # (container, workdir) -> lister

    # ------------------------------------------------------------ the volume

    def ensure_volume(self, name: str, labels: Mapping[str, str]) -> str:
        """Create the project's volume unless it exists; its identity: a random label given at
        creation (a volume removed and made again under the same name is another one)."""
        import docker.errors

        client = self._engine.client
        try:
            try:
                attrs = client.api.inspect_volume(name)
            except docker.errors.NotFound:
                more = {**labels, VOLUME_ID: secrets.token_hex(8)}
                attrs = client.api.create_volume(name, labels=self._engine.labels(**more))
        except Exception as exc:
            raise engine_error(exc) from exc
        # Not CreatedAt: the engine reports the folder's mtime there, which moves with its files.
        return str((attrs.get("Labels") or {}).get(VOLUME_ID, "")) or f"unlabelled {name}"

    def remove_volume(self, name: str) -> None:
        import docker.errors

        try:
            self._engine.client.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            return
        except Exception as exc:
            raise engine_error(exc) from exc

    # ------------------------------------------------------------ reading

    def _exec(self, container: str, argv: Sequence[str]) -> tuple[int, bytes, bytes]:
        try:
            api = self._engine.client.api
            exec_id = api.exec_create(container, list(argv), user="0")["Id"]
            out, err = api.exec_start(exec_id, demux=True)
            code = api.exec_inspect(exec_id).get("ExitCode")
        except Exception as exc:
            raise engine_error(exc) from exc
        return int(code if code is not None else 1), out or b"", err or b""

    def listing(self, container: str, workdir: str) -> Listing:
        """Every file and link in the volume with its stat data: from the container's lister
        (an exec kept waiting, see _Lister) when it has one, else in one exec, after which a
        lister is started in the background for the next listing. find's status 1 (an error
        part way: a folder gone mid-walk, EIO) gives a listing marked incomplete."""
        key = (container, workdir)
        with self._lock:
            lister = self._listers.get(key)
        answer = lister.ask() if lister is not None else None  # (a broken one drops out)
        if answer is None:
            answer = self._exec(container, ["sh", "-c", find_script(workdir)])
            self._start_lister(key)  # unless one is starting
        code, out, err = answer
        if code not in (0, 1) or (code == 1 and not out):
            raise ContainerError(
                f"cannot list {workdir} in container {container[:12]} "
                f"(exit {code}: {err.decode(errors='replace').strip()[-200:]})",
                hint="the image needs GNU find (findutils) to sync a project with a remote "
                "engine; Debian and Ubuntu images have it",
            )
        if len(out) > MAX_LISTING_BYTES:
            raise ContainerError(
                f"the listing of {workdir} in container {container[:12]} is over "
                f"{MAX_LISTING_BYTES >> 20} MiB; refused (nothing synced)"
            )
        listing = parse_find(out, code)
        if listing.refused:
            log.warning("not synced (unsafe names in %s): %s", workdir,
                        [ascii(n)[:80] for n in listing.refused[:5]])  # fmt: skip
        if not listing.complete:
            log.warning("the listing of %s in %s is incomplete: %s", workdir, container[:12],
                        listing.why)  # fmt: skip
        return listing

    def _start_lister(self, key: tuple[str, str]) -> None:
        with self._lock:
            if key in self._listers:
                return
            lister = _Lister(self._engine, *key, on_close=lambda: self._drop(key, lister))
            self._listers[key] = lister
        threading.Thread(target=lister.start, name="envd-lister", daemon=True).start()

    def close(self) -> None:
        """End every lister (their execs end with them)."""
        with self._lock:
            listers = list(self._listers.values())
            self._listers.clear()
        for lister in listers:
            lister.close()

    def _drop(self, key: tuple[str, str], lister: _Lister) -> None:
        with self._lock:
            if self._listers.get(key) is lister:
                del self._listers[key]
        lister.close()

    def hashes(self, container: str, workdir: str, paths: Sequence[str]) -> dict[str, str]:
        """sha256 of the given files; those it cannot hash (no sha256sum) are left out."""
        out: dict[str, str] = {}
        for i in range(0, len(paths), ARGV_BATCH):
            batch = list(paths[i : i + ARGV_BATCH])
            argv = ["sh", "-c", f'cd {workdir} && exec sha256sum -- "$@"', "sh", *batch]
            code, stdout, _ = self._exec(container, argv)
            if code == 0:
                out |= parse_sha256sum(stdout.decode("utf-8", "surrogateescape"), batch)
        return out

    def read(
        self,
        container: str,
        workdir: str,
        groups: Iterable[tuple[str, frozenset[str]]],
        on_member: MemberSink,
        on_bytes: ByteSink | None = None,
    ) -> None:
        """Stream each group's archive and hand over the wanted files and links in it. A file
        hard-linked to another in the same archive (a LNKTYPE member: no data of its own in a
        stream) is fetched again by itself, where it is a regular file."""
        alone: list[str] = []
        for root, wanted in groups:
            alone += self._read_group(container, workdir, root, wanted, on_member, on_bytes)
        for rel in alone:
            if self._read_group(container, workdir, rel, frozenset({rel}), on_member, on_bytes):
                log.warning("%s came back as a hard link again; not brought back", rel)

    def _read_group(
        self,
        container: str,
        workdir: str,
        root: str,
        wanted: frozenset[str],
        on_member: MemberSink,
        on_bytes: ByteSink | None,
    ) -> list[str]:
        """One archive's wanted members handed over; the hard links in it (see read)."""
        links: list[str] = []
        try:
            chunks, _ = self._engine.client.api.get_archive(
                container, posixpath.join(workdir, root), chunk_size=CHUNK
            )
        except Exception as exc:
            error = engine_error(exc)
            error.message = f"cannot read {root} from the engine: {error.message}"
            raise error from exc
        parent = posixpath.dirname(root)
        try:
            with tarfile.open(
                fileobj=io.BufferedReader(ChunkReader(chunks), CHUNK),
                mode="r|",
                errors="surrogateescape",
            ) as tar:
                for member in tar:
                    rel = posixpath.normpath(posixpath.join(parent, member.name))
                    if rel not in wanted:
                        continue
                    if member.issym():
                        on_member(rel, member, None)
                    elif member.islnk():
                        links.append(rel)
                    elif member.isfile():
                        data = tar.extractfile(member)
                        if data is not None:
                            source = _Counting(data, rel, member.size, on_bytes)
                            on_member(rel, member, source)  # type: ignore[arg-type]
        except EnvdError:
            raise
        except (tarfile.TarError, OSError) as exc:
            raise ContainerError(f"the engine's archive of {root} broke off: {exc}") from exc
        return links

    # ------------------------------------------------------------ writing

    def write(
        self,
        container: str,
        workdir: str,
        files: Sequence[Outgoing],
        uid: int,
        gid: int,
        on_bytes: ByteSink | None = None,
    ) -> dict[str, tuple[int, int]]:
        """Write files into the volume in one streamed archive, owned by uid:gid, with each
        file's mtime cut to whole seconds (so the volume's stat of it is known exactly):
        returns (size, mtime_ns) per file as written."""
        sent: set[str] = set()
        if files:
            stream = _tar_stream(files, uid, gid, on_bytes, sent)
            try:
                self._engine.client.api.put_archive(container, workdir, stream)
            except Exception as exc:
                raise engine_error(exc) from exc
        return {
            f.relpath: (f.stat.size, f.stat.mtime_ns // 10**9 * 10**9)
            for f in files
            if f.stat.kind == FILE and f.relpath in sent
        }

    def remove(self, container: str, workdir: str, paths: Sequence[str]) -> None:
        for i in range(0, len(paths), ARGV_BATCH):
            batch = list(paths[i : i + ARGV_BATCH])
            argv = ["sh", "-c", f'cd {workdir} && exec rm -f -- "$@"', "sh", *batch]
            code, _, err = self._exec(container, argv)
            if code != 0:
                raise ContainerError(
                    f"cannot remove files from {workdir} on the engine: "
                    f"{err.decode(errors='replace').strip()[-200:]}"
                )

    def own_workdir(self, container: str, workdir: str, uid: int, gid: int) -> None:
        """The volume's top folder belongs to the caller (a fresh volume's is root's)."""
        code, _, err = self._exec(container, ["chown", f"{uid}:{gid}", workdir])
        if code != 0:
            raise ContainerError(
                f"cannot hand {workdir} to {uid}:{gid} on the engine: "
                f"{err.decode(errors='replace').strip()[-200:]}"
            )


class _Counting:
    """A member's stream that reports progress as it is read."""

    def __init__(self, raw: IO[bytes], path: str, size: int, sink: ByteSink | None) -> None:
        self._raw, self._path, self._size, self._sink = raw, path, size, sink
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._done += len(data)
        if self._sink is not None and data:
            self._sink(self._path, self._done, self._size)
        return data


def _dirs(files: Sequence[Outgoing]) -> list[str]:
    """Every folder above the files, parents first (so they are created owned by the caller)."""
    out: set[str] = set()
    for f in files:
        parent = posixpath.dirname(f.relpath)
        while parent and parent not in out:
            out.add(parent)
            parent = posixpath.dirname(parent)
    return sorted(out, key=lambda p: (p.count("/"), p))


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _tar_stream(
    files: Sequence[Outgoing],
    uid: int,
    gid: int,
    on_bytes: ByteSink | None,
    sent_files: set[str] | None = None,
) -> Iterator[bytes]:
    """A tar archive of the files, produced chunk by chunk (a large file is never in memory).
    A file gone since it was listed is left out (the next sync sees it gone); the ones sent
    are added to sent_files."""
    for d in _dirs(files):
        info = tarfile.TarInfo(d)
        info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, gid
        info.mtime = int(time.time())
        yield _header(info)
    for f in files:
        info = tarfile.TarInfo(f.relpath)
        info.uid, info.gid = uid, gid
        info.mtime = f.stat.mtime_ns // 10**9
        info.mode = f.stat.mode & 0o7777
        if f.stat.kind != FILE:
            info.type, info.linkname = tarfile.SYMTYPE, f.stat.target
            yield _header(info)
            continue
        info.size = f.stat.size
        try:
            source = open(f.host_path, "rb")  # noqa: SIM115 (closed below, after the yields)
        except OSError:
            continue
        yield _header(info)
        sent = 0
        with source:
            while sent < info.size:
                data = source.read(min(CHUNK, info.size - sent))
                if not data:  # shrank since it was listed: pad; the next sync sends it again
                    data = b"\0" * min(CHUNK, info.size - sent)
                sent += len(data)
                if on_bytes is not None:
                    on_bytes(f.relpath, sent, info.size)
                yield data
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
        if sent_files is not None:
            sent_files.add(f.relpath)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)
