"""git: the commit and dirty flag of a project directory ("" when it is not a repository);
for VCS requirements, a ref resolved to its commit and a commit's tree as a tar."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from envd.errors import EnvdError, RegistryError
from envd.gateways.proc import run
from envd.gateways.trust import host_ca_bundle

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
