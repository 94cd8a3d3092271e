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
