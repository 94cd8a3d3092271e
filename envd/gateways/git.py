"""git: the commit and dirty flag of a project directory ("" when it is not a repository)."""

from __future__ import annotations

import os

from envd.gateways.proc import run

# The daemon may read a checkout owned by another uid (root's daemon, a mounted volume):
# reading HEAD is harmless, so git's "dubious ownership" refusal is lifted for these calls.
_GIT = ("git", "-c", "safe.directory=*", "--no-optional-locks")


def commit_and_dirty(directory: str) -> tuple[str, bool]:
    """HEAD's commit and whether tracked files differ from it; ("", False) outside a repo.

    Read on every `enter` with a command, so: no git at all where git would find no
    repository, else one `git status` (two calls only where that one fails, e.g. an old git).
    """
    if not _maybe_in_a_repository(directory):
        return "", False
    try:
        status = run(
            [*_GIT, "-C", directory, "status", "--porcelain=v2", "--branch", "--no-ahead-behind",
             "--untracked-files=no"],
            check=False,
            timeout=30,
        )  # fmt: skip
    except Exception:  # git missing or hung: a run record without a commit, not a failure
        return "", False
    if status.returncode == 0:
        lines = status.stdout.splitlines()
        oids = [line.split()[2] for line in lines if line.startswith("# branch.oid ")]
        if len(oids) == 1:
            if oids[0] == "(initial)":  # no commit yet
                return "", False
            return oids[0], any(line and not line.startswith("#") for line in lines)
    return _commit_and_dirty_two_calls(directory)


def _maybe_in_a_repository(directory: str) -> bool:
    """False only when git could find no repository for `directory`: no `.git` (and no bare
    repository) in it or any folder above, by its physical or its given path, and no GIT_*
    variable pointing git elsewhere. A few lstat calls instead of starting git."""
    if any(name in os.environ for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR")):
        return True
    for start in {os.path.realpath(directory), os.path.abspath(directory)}:
        path = start
        while True:
            if os.path.lexists(os.path.join(path, ".git")):
                return True
            if os.path.lexists(os.path.join(path, "HEAD")) and os.path.isdir(
                os.path.join(path, "objects")
            ):
                return True  # a bare repository, or the inside of a .git folder
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return False


def _commit_and_dirty_two_calls(directory: str) -> tuple[str, bool]:
    try:
        head = run(
            [*_GIT, "-C", directory, "rev-parse", "--verify", "HEAD"], check=False, timeout=10
        )
        if head.returncode != 0:
            return "", False
        status = run(
            [*_GIT, "-C", directory, "status", "--porcelain", "--untracked-files=no"],
            check=False,
            timeout=30,
        )
    except Exception:  # git missing or hung: a run record without a commit, not a failure
        return "", False
    return head.stdout.strip(), status.returncode == 0 and bool(status.stdout.strip())


MAX_DIFF_CHARS = 1 << 20  # the uncommitted diff kept with a run; its sha256 covers all of it


def uncommitted_diff(directory: str, max_chars: int = MAX_DIFF_CHARS) -> tuple[str, str, bool]:
    """`git diff HEAD` of tracked files: (text, at most max_chars; sha256 of the whole diff;
    whether the text was cut). ("", "", False) when clean or outside a repository."""
    import hashlib

    if not _maybe_in_a_repository(directory):
        return "", "", False

    try:
        diff = run(
            [*_GIT, "-C", directory, "diff", "--no-color", "--no-ext-diff", "--binary", "HEAD"],
            check=False,
            timeout=60,
        )
    except Exception:  # git missing or hung: no diff recorded, not a failed run
        return "", "", False
    if diff.returncode != 0 or not diff.stdout:
        return "", "", False
    text = diff.stdout
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return text[:max_chars], digest, len(text) > max_chars
