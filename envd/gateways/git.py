"""git: the commit, dirty flag and uncommitted diff of a project directory ("" when it is not
a repository); for VCS requirements, a ref resolved to its commit and a commit's tree as a tar.

A project's `.git` is written by code in its container (the project is bind-mounted), so
reading it must run nothing it configures and read nothing outside it. It is read with libgit2
(pygit2), which runs no fsmonitor, hooks, filter drivers, textconv, external diff or pager,
in a helper process of envd's own: libgit2 holds the GIL and blocks in open() on a FIFO a
container planted (a `.gitattributes`, an include), so a read that does not answer in time is
killed instead of freezing the daemon, and the helper's memory is bounded.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import select
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envd.errors import EnvdError, RegistryError
from envd.gateways.files import open_beneath, sha256_fileobj
from envd.gateways.proc import run
from envd.gateways.trust import host_ca_bundle
from envd.model.safenames import UnsafeName, relative

if TYPE_CHECKING:
    import pygit2

log = logging.getLogger(__name__)

# Only for the bare repositories envd makes itself (VCS requirements). Nothing there is
# configured by anyone else; the overrides are belt and braces.
_GIT = (
    "git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null", "--no-optional-locks",
)  # fmt: skip

MAX_DIFF_CHARS = 1 << 20  # the uncommitted diff kept with a run; its sha256 covers all of it
_STATE_TIMEOUT_S = 20.0
_DIFF_TIMEOUT_S = 40.0


def commit_and_dirty(directory: str) -> tuple[str, bool]:
    """HEAD's commit and whether tracked files differ from it; ("", False) outside a repo, in
    a repository that is not confined to its own folder, or when it cannot be read in time.

    Read on every `enter` with a command, so: no work at all where no `.git` is found in the
    directory or above it, else one request to the reader process (about a millisecond)."""
    root = _repository_root(directory)
    if root is None:
        return "", False
    reply = _READERS.ask({"op": "state", "root": root}, _STATE_TIMEOUT_S)
    if reply is None or not isinstance(reply.get("commit"), str):
        return "", False
    return reply["commit"], bool(reply.get("dirty"))


def uncommitted_diff(directory: str, max_chars: int = MAX_DIFF_CHARS) -> tuple[str, str, bool]:
    """The diff of tracked files against HEAD (`git diff --binary HEAD`): (text, at most
    max_chars; sha256 of the whole diff; whether the text was cut). ("", "", False) when clean,
    outside a repository, or when it cannot be read (see `commit_and_dirty`)."""
    root = _repository_root(directory)
    if root is None:
        return "", "", False
    reply = _READERS.ask({"op": "diff", "root": root, "max_chars": max_chars}, _DIFF_TIMEOUT_S)
    if reply is None or not isinstance(reply.get("text"), str) or not reply.get("sha256"):
        return "", "", False
    return reply["text"], str(reply["sha256"]), bool(reply.get("cut"))


def _repository_root(directory: str) -> str | None:
    """The folder holding the `.git` that git would find for `directory` (its physical path,
    then each folder above), or None: a few lstat calls, no process. GIT_DIR and friends in
    the daemon's environment are not followed: a project is read from its own folder."""
    path = os.path.realpath(directory)
    while True:
        if os.path.lexists(os.path.join(path, ".git")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


# ---------------------------------------------------------------- the reader processes

_MAX_READERS = 4  # idle readers kept; more run at once only while requests overlap
_STUCK_FOR_S = 600.0  # a repository whose read timed out is not read again for this long


class _Readers:
    """Reader processes (`python -m envd.gateways.git`), each answering one JSON line per
    request line. A reader that does not answer in time, or answers nonsense, is killed."""

    def __init__(self) -> None:
        self._idle: list[subprocess.Popen[bytes]] = []
        self._stuck: dict[str, float] = {}  # root -> when a read of it timed out
        self._lock = threading.Lock()

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        root = str(request["root"])
        with self._lock:
            since = self._stuck.get(root)
            if since is not None and time.monotonic() - since < _STUCK_FOR_S:
                return None  # (a planted FIFO would cost every enter the whole timeout)
            self._stuck.pop(root, None)
            proc = self._idle.pop() if self._idle else None
        if proc is None or proc.poll() is not None:
            proc = _start_reader()
            if proc is None:
                return None
        reply: dict[str, Any] | None = None
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            limit = 8 * int(request.get("max_chars", 0)) + 65536
            line = _read_line(proc.stdout.fileno(), time.monotonic() + timeout, limit)
            if line is None:
                log.warning(
                    "git: %s not read in %.0f s (a FIFO or a huge repository?); "
                    "its runs have no commit for the next %.0f s",
                    root, timeout, _STUCK_FOR_S,
                )  # fmt: skip
                with self._lock:
                    self._stuck[root] = time.monotonic()
            elif line:
                parsed = json.loads(line)
                reply = parsed if isinstance(parsed, dict) else None
        except (OSError, ValueError):
            reply = None
        if reply is None:
            _stop(proc)
            return None
        if "refused" in reply or "error" in reply:
            log.info("git: %s not read: %s", root, reply.get("refused") or reply.get("error"))
        with self._lock:
            if len(self._idle) < _MAX_READERS:
                self._idle.append(proc)
                proc = None
        if proc is not None:
            _stop(proc)
        return reply if "error" not in reply else None

    def prestart(self) -> None:
        """Start one idle reader now, so the first `enter` does not wait for its start-up."""
        proc = _start_reader()
        if proc is None:
            return
        with self._lock:
            if len(self._idle) < _MAX_READERS:
                self._idle.append(proc)
                return
        _stop(proc)

    def close(self) -> None:
        """End the idle readers (a reader also ends by itself when its stdin closes)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            _stop(proc)


def _start_reader() -> subprocess.Popen[bytes] | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    # the envd this daemon runs, wherever it was imported from (a checkout, the cwd)
    source = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "envd.gateways.git"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    except OSError:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _read_line(fd: int, deadline: float, limit: int) -> bytes | None:
    """One line from `fd` (a reader replies with exactly one per request); None when it does
    not come before `deadline`, b"" when the reader ended or the line grows past `limit`."""
    poller = select.poll()  # (select() fails on descriptors past 1024: a busy daemon has them)
    poller.register(fd, select.POLLIN)
    buf = bytearray()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, 1 << 16)
        if not chunk or len(buf) + len(chunk) > limit:
            return b""
        buf += chunk
    return bytes(buf)


_READERS = _Readers()
atexit.register(_READERS.close)


def prestart_reader() -> None:
    """Start a reader in the background (about 150 ms of Python start-up, off the first
    enter's path); the daemon calls this once when it starts."""
    threading.Thread(target=_READERS.prestart, name="git-reader-start", daemon=True).start()


# ---------------------------------------------------------------- inside a reader process

_MAX_FILE_BYTES = 32 << 20  # a changed file larger than this is named in the diff, not diffed
_MEMORY_LIMIT = 2 << 30  # the reader's address space
_MAX_SMALL_FILE = 1 << 16  # `.git` files, `gitdir` back-links, HEAD


_MAX_OPENED = 8  # repositories a reader keeps open (status then reuses libgit2's caches)
_OPENED: dict[str, pygit2.Repository] = {}  # root -> its repository, least recent first


class _Refused(Exception):
    """The repository reaches outside its own folder: read as "not a repository"."""


def _small_file(path: str) -> str:
    """A small regular file's text (no link followed, no FIFO waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused(f"{path} is not a regular file")
        return os.read(fd, _MAX_SMALL_FILE).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _no_link(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _Refused(f"{path} is a symbolic link")


def _git_dir(root: str) -> str:
    """The repository folder for the `.git` in `root`, when it belongs to `root`: a `.git`
    folder (no `commondir` pointing at another repository's objects and refs), a submodule's
    folder in a superproject's `.git/modules` above `root`, or a linked worktree's folder whose
    `gitdir` file points back at this `.git`. A `.git` that is a link, or a `gitdir:` file
    pointing at any other repository on the host, is refused."""
    dotgit = os.path.join(root, ".git")
    mode = os.lstat(dotgit).st_mode
    if stat.S_ISDIR(mode):
        if os.path.lexists(os.path.join(dotgit, "commondir")):
            raise _Refused(".git/commondir points at another repository")
        return dotgit
    if not stat.S_ISREG(mode):
        raise _Refused(".git is neither a folder nor a `gitdir:` file")
    text = _small_file(dotgit).strip()
    if not text.startswith("gitdir:"):
        raise _Refused(".git is a file without `gitdir:`")
    git_dir = os.path.realpath(os.path.join(root, text[len("gitdir:") :].strip()))
    parent, grand = os.path.dirname(git_dir), os.path.dirname(os.path.dirname(git_dir))
    if os.path.basename(parent) == "worktrees" and os.path.basename(grand) == ".git":
        back = _small_file(os.path.join(git_dir, "gitdir")).strip()
        if os.path.realpath(os.path.join(git_dir, back)) == os.path.realpath(dotgit):
            return git_dir
        raise _Refused(f"{git_dir} is not the worktree of {root}")
    if "/.git/modules/" in git_dir:
        superproject = git_dir.split("/.git/modules/", 1)[0]
        if root == superproject or root.startswith(superproject.rstrip("/") + "/"):
            return git_dir  # libgit2's workdir (its core.worktree) is checked after opening
    raise _Refused(f".git points at {git_dir}, another repository")


def _check_refs(git_dir: str, common: str) -> None:
    """HEAD's branch is read from files inside the repository, not through links: a commit
    reached through a link to another repository would bring its files into the diff."""
    for path in (
        os.path.join(git_dir, "HEAD"),
        *(os.path.join(common, name) for name in ("objects", "refs", "packed-refs")),
    ):
        _no_link(path)
    head = _small_file(os.path.join(git_dir, "HEAD")).strip()
    if not head.startswith("ref:"):
        return
    try:
        ref = relative(head[4:].strip(), "HEAD")
        os.close(open_beneath(common, ref, os.O_RDONLY | os.O_NONBLOCK))
    except FileNotFoundError:
        return  # a packed ref, or an unborn branch
    except (UnsafeName, OSError) as exc:
        raise _Refused(f"HEAD names {head[4:].strip()!r}: {exc}") from None


def _open_confined(root: str) -> pygit2.Repository:
    import pygit2
    from pygit2.enums import RepositoryOpenFlag

    git_dir = _git_dir(root)
    common = git_dir
    if os.path.basename(os.path.dirname(git_dir)) == "worktrees":
        common = os.path.dirname(os.path.dirname(git_dir))
    _check_refs(git_dir, common)
    repo = _OPENED.pop(root, None)  # (libgit2 re-reads refs, index and packs as they change)
    if repo is None or os.path.realpath(repo.path) != os.path.realpath(git_dir):
        repo = pygit2.Repository(root, RepositoryOpenFlag.NO_SEARCH)
    if repo.is_bare or repo.workdir is None:
        raise _Refused("a bare repository")
    if os.path.realpath(repo.workdir) != root:
        raise _Refused(f"its work tree is {repo.workdir}, not {root} (core.worktree)")
    if os.path.realpath(repo.path) != os.path.realpath(git_dir):
        raise _Refused(f"libgit2 opened {repo.path}, not {git_dir}")
    if "/.git/modules/" in git_dir:  # a submodule's folder names its work tree: this one
        config = repo.config  # (no .get: pygit2's Config is not a Mapping)
        worktree = str(config["core.worktree"]) if "core.worktree" in config else ""
        if not worktree or os.path.realpath(os.path.join(git_dir, worktree)) != root:
            raise _Refused(f"{git_dir} is the repository of another submodule")
    _OPENED[root] = repo
    while len(_OPENED) > _MAX_OPENED:
        del _OPENED[next(iter(_OPENED))]
    return repo


def _read_state(root: str) -> dict[str, Any]:
    repo = _open_confined(root)
    if repo.head_is_unborn:
        return {"commit": "", "dirty": False}
    commit = str(repo.head.target)
    return {"commit": commit, "dirty": bool(repo.status(untracked_files="no"))}


def _read_diff(root: str, max_chars: int) -> dict[str, Any]:
    """The patches of HEAD -> index -> work tree (what `git diff HEAD` shows), one file at a
    time: the sha256 is fed as they come, the text kept only up to max_chars."""
    import pygit2
    from pygit2.enums import DiffOption

    repo = _open_confined(root)
    if repo.head_is_unborn:
        return {"text": "", "sha256": "", "cut": False}
    tree = repo.head.peel(pygit2.Tree)
    index = repo.index
    index.read(force=False)  # (the index of a repository kept open: as it is on disk now)
    diff = tree.diff_to_index(index, DiffOption.SHOW_BINARY)
    diff.merge(index.diff_to_workdir(DiffOption.SHOW_BINARY))
    digest = hashlib.sha256()
    kept: list[str] = []
    kept_chars = total = 0
    for index, delta in enumerate(diff.deltas):
        size = max(delta.old_file.size, delta.new_file.size)
        if size > _MAX_FILE_BYTES:
            text = _big_file_line(root, delta, size)
        else:
            patch = diff[index]
            text = patch.data.decode("utf-8", "replace") if patch is not None else ""
        digest.update(text.encode("utf-8"))
        total += len(text)
        if kept_chars < max_chars:
            kept.append(text[: max_chars - kept_chars])
            kept_chars += len(kept[-1])
    if total == 0:
        return {"text": "", "sha256": "", "cut": False}
    return {"text": "".join(kept), "sha256": digest.hexdigest(), "cut": total > max_chars}


def _big_file_line(root: str, delta: pygit2.DiffDelta, size: int) -> str:
    """A changed file too large to diff: named, with what identifies its two versions (the
    work tree's by a streamed sha256), so the diff's sha256 still changes with its content."""
    old, new = delta.old_file, delta.new_file
    new_id = str(new.id)
    if set(new_id) == {"0"} and new.path:  # the work tree's side: not hashed by libgit2
        new_id = "missing"
        try:
            fd = open_beneath(
                root, relative(new.path, "a changed file"), os.O_RDONLY | os.O_NONBLOCK
            )
        except (UnsafeName, OSError):
            fd = -1
        if fd >= 0:
            with os.fdopen(fd, "rb") as handle:
                if stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    new_id = f"sha256:{sha256_fileobj(handle)}"
    return (
        f"diff --git a/{old.path} b/{new.path}\n"
        f"# not diffed: {size} bytes (over {_MAX_FILE_BYTES}); {old.id} -> {new_id}\n"
    )


def _serve() -> None:
    """A reader process: one JSON request per line on stdin, one JSON reply per line."""
    import resource

    import pygit2
    from pygit2.enums import Option

    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    # Another uid's checkout (a root daemon, a mounted volume) is read too: libgit2 runs
    # nothing from it, which is what git's ownership check (safe.directory) guards against.
    pygit2.option(Option.SET_OWNER_VALIDATION, 0)
    pygit2.settings.mwindow_mapped_limit = 256 << 20
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            root = str(request["root"])
            if request["op"] == "state":
                reply = _read_state(root)
            else:
                reply = _read_diff(root, int(request["max_chars"]))
        except _Refused as exc:
            reply = {"commit": "", "dirty": False, "text": "", "sha256": "", "refused": str(exc)}
        except Exception as exc:  # an unreadable repository: no commit, not a failed run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.buffer.write(json.dumps(reply, ensure_ascii=False).encode() + b"\n")
        sys.stdout.buffer.flush()


# ---------------------------------------------------------------- VCS requirements

_REMOTE_TIMEOUT_S = 300.0
_COMMIT_HEX = 40


class GitUnreachable(RegistryError):
    """A VCS requirement's repository (or its ref, or its commit) cannot be read."""


def _remote_env() -> dict[str, str]:
    """No prompts (a daemon has no terminal), no user or system config that changes content."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env |= {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_ASKPASS": "true"}
    if bundle := host_ca_bundle():
        env["GIT_SSL_CAINFO"] = bundle
    return env


def _git(argv: list[str], what: str, hint: str, cwd: str | None = None) -> str:
    try:
        result = run(
            [*_GIT, "-c", "core.autocrlf=false", *argv],
            env=_remote_env(),
            cwd=cwd,
            check=False,
            timeout=_REMOTE_TIMEOUT_S,
        )
    except EnvdError as exc:
        raise GitUnreachable(f"{what}: {exc.message}", hint=hint) from None
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise GitUnreachable(f"{what}: `git {argv[0]}` failed:\n  {tail}", hint=hint)
    return result.stdout


def resolve_ref(repo: str, ref: str, *, what: str, hint: str) -> str:
    """The commit `ref` (a branch, a tag, HEAD) names in `repo` now (`git ls-remote`)."""
    out = _git(["ls-remote", "--", repo, ref, f"{ref}^{{}}"], what, hint)  # (tags: peeled)
    found: dict[str, str] = {}
    for line in out.splitlines():
        commit, _, name = line.partition("\t")
        found[name] = commit
    for name in (ref, f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if len(found.get(name, "")) == _COMMIT_HEX:
            return found[name]
    if len(found) == 1 and not next(iter(found)).startswith("refs/tags/"):
        return next(iter(found.values()))
    raise GitUnreachable(
        f"{what}: {repo} has no branch or tag `{ref}`"
        + (f" ({len(found)} refs match it)" if found else ""),
        hint=hint,
    )


def archive(
    repo: str,
    commit: str,
    dest: Path,
    prefix_of: Callable[[str], str],
    *,
    what: str,
    hint: str,
) -> None:
    """The tree of `commit` as an uncompressed tar at `dest`, made by `git archive` (the same
    bytes for the same commit), its entries under `prefix_of(the commit's pyproject.toml
    text, "" when it has none)`."""
    with tempfile.TemporaryDirectory(prefix="envd-git-") as tmp:
        _git(["init", "-q", "--bare", tmp], what, hint)
        fetched = run(
            [*_GIT, "-C", tmp, "fetch", "-q", "--depth", "1", "--", repo, commit],
            env=_remote_env(),
            check=False,
            timeout=_REMOTE_TIMEOUT_S,
        )
        if fetched.returncode != 0:  # a server that fetches no single commit: all of it
            _git(["-C", tmp, "fetch", "-q", "--", repo, "+refs/*:refs/remotes/all/*"], what, hint)
        _git(["-C", tmp, "cat-file", "-e", f"{commit}^{{commit}}"], what, hint)
        shown = run(
            [*_GIT, "-C", tmp, "show", f"{commit}:pyproject.toml"],
            env=_remote_env(),
            check=False,
            timeout=60,
        )
        prefix = prefix_of(shown.stdout if shown.returncode == 0 else "")
        _git(
            ["-C", tmp, "archive", "--format=tar", f"--prefix={prefix}", "-o", str(dest), commit],
            what,
            hint,
        )


if __name__ == "__main__":
    _serve()
