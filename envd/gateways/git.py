"""git: the commit and dirty flag of a project directory ("" when it is not a repository)."""

from __future__ import annotations

from envd.gateways.proc import run

# The daemon may read a checkout owned by another uid (root's daemon, a mounted volume):
# reading HEAD is harmless, so git's "dubious ownership" refusal is lifted for these calls.
_GIT = ("git", "-c", "safe.directory=*", "--no-optional-locks")


def commit_and_dirty(directory: str) -> tuple[str, bool]:
    """HEAD's commit and whether tracked files differ from it; ("", False) outside a repo."""
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
