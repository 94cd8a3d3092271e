"""git: the commit and dirty flag of a project directory ("" when it is not a repository)."""

from __future__ import annotations

from envd.gateways.proc import run


def commit_and_dirty(directory: str) -> tuple[str, bool]:
    try:
        head = run(["git", "-C", directory, "rev-parse", "HEAD"], check=False, timeout=10)
        if head.returncode != 0:
            return "", False
        status = run(
            ["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
            check=False,
            timeout=10,
        )
    except Exception:  # git missing or hung: a run record without a commit, not a failure
        return "", False
    return head.stdout.strip(), bool(status.stdout.strip())
