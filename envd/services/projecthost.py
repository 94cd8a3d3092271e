"""The project's files on this machine, as a sync reads and writes them.

`scan_host` lists them (lstat only, ignored names left out); `write_host` and `remove_host`
change them beneath the project root only (through `files.open_beneath`: no link on the way
is followed), atomically, and never a file edited here since it was seen.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat as stat_module
import tarfile
from pathlib import PurePosixPath
from typing import IO

from envd.gateways.files import open_beneath, sha256_file
from envd.model.projectsync import (
    FILE,
    IGNORED_NAMES,
    LINK,
    Entry,
    Stat,
    ignored_name,
)
from envd.model.safenames import UnsafeName, relative


def scan_host(root: str) -> dict[str, Stat]:
    """Every file and link under root (not following links), ignored names left out."""
    out: dict[str, Stat] = {}
    stack = [("", root)]
    while stack:
        rel_dir, folder = stack.pop()
        try:
            items = list(os.scandir(folder))
        except OSError:
            continue
        for item in items:
            if item.name in IGNORED_NAMES:
                continue
            rel = f"{rel_dir}{item.name}"
            if not _plain(rel):
                continue  # a name the engine's side refuses too (see parse_find)
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat_module.S_ISDIR(st.st_mode):
                stack.append((rel + "/", item.path))
            elif ignored_name(rel):
                continue
            elif stat_module.S_ISREG(st.st_mode):
                out[rel] = Stat(FILE, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777)
            elif stat_module.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(item.path)
                except OSError:
                    continue
                out[rel] = Stat(LINK, 0, st.st_mtime_ns, 0o777, target)
    return out


def sha256_of(path: str) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _plain(rel: str) -> bool:
    try:
        return relative(rel, "a project path").as_posix() == rel
    except UnsafeName:
        return False


def free_bytes(path: str) -> int:
    """Bytes free for the user on path's filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class TooLarge(Exception):
    """A file arriving with more bytes than admitted: it is not written."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY


def _folder(root: str, rel: PurePosixPath, make: bool) -> int:
    """A descriptor of the folder rel under root (made if missing and `make`), reached
    through files.open_beneath: a link on the way fails (ELOOP/ENOTDIR), never followed."""
    if not rel.parts:
        return os.open(root, _DIR_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return open_beneath(root, rel, _DIR_FLAGS)
    except FileNotFoundError:
        if not make:
            raise
    for i in range(len(rel.parts)):
        above = _folder(root, PurePosixPath(*rel.parts[:i]), False)
        try:
            os.mkdir(rel.parts[i], 0o777, dir_fd=above)  # (the umask applies, as makedirs)
        except FileExistsError:
            pass
        finally:
            os.close(above)
    return open_beneath(root, rel, _DIR_FLAGS)


def _unlink_quietly(name: str, folder: int) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def remove_host(root: str, relpath: str, seen: Stat | None) -> None:
    """Delete relpath here unless it changed since `seen` (then the next sync sends it). A
    link is compared by its target and mtime (an lstat size is its target's length)."""
    if seen is None:
        return
    try:
        rel = relative(relpath, "a synced path")
        folder = _folder(root, rel.parent, False)
    except (UnsafeName, OSError):
        return  # gone, or a link on the way: nothing of ours to delete
    try:
        st = os.stat(rel.name, dir_fd=folder, follow_symlinks=False)
        if seen.kind == LINK:
            if not stat_module.S_ISLNK(st.st_mode) or st.st_mtime_ns != seen.mtime_ns:
                return
            if os.readlink(rel.name, dir_fd=folder) != seen.target:
                return
        elif not stat_module.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (
            seen.size,
            seen.mtime_ns,
        ):
            return  # edited here meanwhile: keep it
        os.unlink(rel.name, dir_fd=folder)
    except OSError:
        return
    finally:
        os.close(folder)


def write_host(
    root: str, relpath: str, member: tarfile.TarInfo, body: IO[bytes] | None, limit: int
) -> tuple[Entry, tuple[int, int]]:
    """Write one file or link from the volume into the project, atomically, beneath root
    (no link on the way followed); a file with more than `limit` bytes is not written."""
    rel = relative(relpath, "a path from the engine")
    name = rel.name
    folder = _folder(root, rel.parent, True)
    try:
        if body is None:  # a link
            tmp = f".{name}.envd-tmp"
            _unlink_quietly(tmp, folder)
            os.symlink(member.linkname, tmp, dir_fd=folder)
            try:
                os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                _unlink_quietly(tmp, folder)
                raise
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
            return Entry(LINK, "", 0, member.linkname), (0, st.st_mtime_ns)
        digest = hashlib.sha256()
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                copied = 0
                while chunk := body.read(1 << 20):
                    copied += len(chunk)
                    if copied > limit:
                        raise TooLarge(f"over {limit} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                os.fchmod(f.fileno(), member.mode & 0o777)
            try:
                there = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat_module.S_ISDIR(there.st_mode):
                    raise IsADirectoryError(
                        errno.EISDIR, "a folder here, a file on the engine", relpath
                    )
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            _unlink_quietly(tmp, folder)
            raise
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    finally:
        os.close(folder)
    entry = Entry(FILE, digest.hexdigest(), member.mode & 0o7777, "", st.st_size)
    return entry, (st.st_size, st.st_mtime_ns)
