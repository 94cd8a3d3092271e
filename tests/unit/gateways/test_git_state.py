"""A run's commit, dirty flag and diff: read with libgit2 in envd's reader process, running
nothing the repository configures and reading nothing outside the project's own repository."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from envd.gateways import git
from envd.gateways.git import commit_and_dirty, uncommitted_diff

HOOKS = [
    "applypatch-msg",
    "pre-applypatch",
    "post-applypatch",
    "pre-commit",
    "pre-merge-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "pre-rebase",
    "post-checkout",
    "post-merge",
    "pre-push",
    "pre-receive",
    "update",
    "proc-receive",
    "post-receive",
    "post-update",
    "reference-transaction",
    "push-to-checkout",
    "pre-auto-gc",
    "post-rewrite",
    "sendemail-validate",
    "fsmonitor-watchman",
    "p4-changelist",
    "p4-prepare-changelist",
    "p4-post-changelist",
    "p4-pre-submit",
    "post-index-change",
]


def sh_git(repo: Path, *args: str) -> str:
    argv = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-c", "protocol.file.allow=always"]
    return subprocess.run(
        [*argv, "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def committed(root: Path, files: dict[str, str]) -> str:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").exists():
        sh_git(root, "init", "-q")
    for name, text in files.items():
        (root / name).write_text(text)
    sh_git(root, "add", "-A")
    sh_git(root, "commit", "-qm", "x")
    return sh_git(root, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    sh_git(root, "init", "-q")
    return root


def test_states_match_rev_parse_and_status(repo: Path) -> None:
    (repo / "f").write_text("x")
    sh_git(repo, "add", "f")
    assert commit_and_dirty(str(repo)) == ("", False)  # no commit yet (even with staged files)
    sh_git(repo, "commit", "-qm", "x")
    head = sh_git(repo, "rev-parse", "HEAD")
    assert commit_and_dirty(str(repo)) == (head, False)
    (repo / "f").write_text("y")
    assert commit_and_dirty(str(repo)) == (head, True)
    sh_git(repo, "checkout", "-q", "f")
    (repo / "untracked").write_text("new")
    assert commit_and_dirty(str(repo)) == (head, False)  # untracked files do not count
    (repo / "sub").mkdir()
    assert commit_and_dirty(str(repo / "sub")) == (head, False)
    (repo / "g").write_text("staged")
    sh_git(repo, "add", "g")
    assert commit_and_dirty(str(repo)) == (head, True)


def test_nothing_is_started_outside_any_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("the temporary folder is inside a git checkout")

    def no_reader() -> None:
        raise AssertionError("a reader was started")

    monkeypatch.setattr(git, "_start_reader", no_reader)
    assert commit_and_dirty(str(tmp_path)) == ("", False)
    assert uncommitted_diff(str(tmp_path)) == ("", "", False)


def test_git_dir_in_the_daemons_environment_is_not_followed(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed(repo, {"f": "x"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    if not any((p / ".git").exists() for p in (elsewhere, *elsewhere.parents)):
        assert commit_and_dirty(str(elsewhere)) == ("", False)
    assert commit_and_dirty(str(repo))[0] == sh_git(repo, "rev-parse", "HEAD")


def test_a_symlink_into_a_repository_finds_it(tmp_path: Path, repo: Path) -> None:
    head = committed(repo, {"f": "x"})
    (repo / "inner").mkdir()
    link = tmp_path / "link"
    link.symlink_to(repo / "inner")
    assert commit_and_dirty(str(link)) == (head, False)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_checkout_owned_by_another_uid_is_read(repo: Path) -> None:
    head = committed(repo, {"f": "x\n"})
    (repo / "f").write_text("y\n")
    for path in (repo, *repo.rglob("*")):
        os.lchown(path, 54321, 54321)
    assert commit_and_dirty(str(repo)) == (head, True)
    assert "+y" in uncommitted_diff(str(repo))[0]


def test_the_diff_is_against_head_with_binary_patches(repo: Path) -> None:
    committed(repo, {"f": "x\n", "gone": "old\n", "bin": "\0\1\2"})
    assert uncommitted_diff(str(repo)) == ("", "", False)  # clean
    (repo / "f").write_text("y\n")
    (repo / "gone").unlink()
    (repo / "bin").write_bytes(b"\0\3\4")
    (repo / "new").write_text("staged\n")
    sh_git(repo, "add", "new")
    (repo / "untracked").write_text("not in the diff\n")
    diff, digest, cut = uncommitted_diff(str(repo))
    assert "-x\n+y" in diff and "-old" in diff and "+staged" in diff
    assert "GIT binary patch" in diff and "untracked" not in diff
    assert digest == hashlib.sha256(diff.encode()).hexdigest() and not cut
    # a patch git applies: reversed, it takes the work tree back to HEAD
    check = subprocess.run(
        ["git", "-C", str(repo), "apply", "--check", "-R", "-"], input=diff.encode()
    )
    assert check.returncode == 0


def test_a_long_diff_is_cut_and_hashed_whole(repo: Path) -> None:
    committed(repo, {f"f{i}": "x\n" * 100 for i in range(20)})
    for i in range(20):
        (repo / f"f{i}").write_text("y\n" * 100)
    whole, whole_sha, whole_cut = uncommitted_diff(str(repo), max_chars=10**7)
    text, digest, cut = uncommitted_diff(str(repo), max_chars=1000)
    assert not whole_cut and cut and len(text) == 1000 and whole.startswith(text)
    assert digest == whole_sha == hashlib.sha256(whole.encode()).hexdigest()


def test_a_file_too_large_to_diff_is_named_with_its_versions(repo: Path) -> None:
    big = git._MAX_FILE_BYTES + 1
    committed(repo, {"big": "a" * big})
    (repo / "big").write_text("b" * big)
    text, digest, _ = uncommitted_diff(str(repo))
    assert "diff --git a/big b/big\n# not diffed: " in text and len(text) < 1000
    (repo / "big").write_text("c" * big)
    assert uncommitted_diff(str(repo))[1] != digest  # its content still counts


def plant_everything(repo: Path, marker_dir: Path) -> list[str]:
    """Every command git could run for status or diff, each touching a marker of its own;
    returns the config lines (for .git/config or a file it includes)."""
    hooks = marker_dir / "hooks"
    hooks.mkdir()
    for name in HOOKS:
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\ntouch {marker_dir}/hook-{name}\ncat >/dev/null\n")
        hook.chmod(0o755)

    def touch(name: str, then: str = "cat") -> str:
        return f"\"sh -c 'touch {marker_dir}/{name}; {then}' #\""

    (repo / ".gitattributes").write_text("* diff=x filter=x\n")
    return [
        "[core]",
        f"\tfsmonitor = {touch('fsmonitor', 'true')}",
        f"\thooksPath = {hooks}",
        f"\tpager = {touch('pager')}",
        "\tuntrackedCache = true",
        '[diff "x"]',
        f"\ttextconv = {touch('textconv', 'cat $0')}",
        f"\tcommand = {touch('diff-command', 'true')}",
        '[filter "x"]',
        f"\tclean = {touch('clean')}",
        f"\tsmudge = {touch('smudge')}",
        f"\tprocess = {touch('process', 'true')}",
        "[diff]",
        f"\texternal = {touch('external', 'true')}",
        "[pager]",
        f"\tdiff = {touch('pager-diff')}",
        f"\tstatus = {touch('pager-status')}",
    ]


@pytest.mark.parametrize("through_include", [False, True], ids=["config", "include"])
def test_nothing_the_repository_configures_runs(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, through_include: bool
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    head = committed(repo, {"f": "x\n", "g": "same size\n"})
    lines = plant_everything(repo, marks)
    config = repo / ".git" / "config"
    if through_include:
        (tmp_path / "included").write_text("\n".join(lines) + "\n")
        config.write_text(config.read_text() + f"[include]\n\tpath = {tmp_path / 'included'}\n")
    else:
        config.write_text(config.read_text() + "\n".join(lines) + "\n")
    # and no git at all: a `git` first on PATH leaves a mark too
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\ntouch {marks}/git-was-run\nexit 1\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    (repo / "f").write_text("y\n")
    (repo / "g").write_text("same SIZE\n")  # same size: its content is read (and filtered)
    os.utime(repo / "g", (1, 1))

    assert commit_and_dirty(str(repo)) == (head, True)
    diff, digest, cut = uncommitted_diff(str(repo))
    assert "-x\n+y" in diff and "-same size\n+same SIZE" in diff and digest and not cut
    assert sorted(os.listdir(marks)) == ["hooks"], "a command from the repository ran"


@pytest.fixture
def host_repo(tmp_path: Path) -> Path:
    """Another repository on the host, whose files must not reach a project's run record."""
    other = tmp_path / "home" / "private"
    committed(other, {"secret.txt": "the host's secret\n"})
    return other


def assert_unread(project: Path) -> None:
    assert commit_and_dirty(str(project)) == ("", False)
    assert uncommitted_diff(str(project)) == ("", "", False)


def test_core_worktree_cannot_point_the_diff_at_host_files(
    tmp_path: Path, repo: Path, host_repo: Path
) -> None:
    # a repository made inside the container whose index lists host files
    sh_git(repo, "--work-tree", str(host_repo), "add", "secret.txt")
    sh_git(repo, "commit", "-qm", "x")
    (host_repo / "secret.txt").write_text("the host's secret, edited\n")
    sh_git(repo, "config", "core.worktree", str(host_repo))
    assert_unread(repo)
    sh_git(repo, "config", "core.worktree", str(tmp_path))  # an ancestor: still not its own
    assert_unread(repo)


def test_a_git_file_or_link_to_another_repository_is_not_read(
    tmp_path: Path, host_repo: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").write_text(f"gitdir: {host_repo / '.git'}\n")
    assert_unread(project)
    (project / ".git").unlink()
    (project / ".git").symlink_to(host_repo / ".git")
    assert_unread(project)


def test_borrowed_objects_and_refs_are_not_read(tmp_path: Path, host_repo: Path) -> None:
    project = tmp_path / "project"
    committed(project, {"f": "x\n"})
    dotgit = project / ".git"
    (dotgit / "commondir").write_text(f"{host_repo / '.git'}\n")
    assert_unread(project)
    (dotgit / "commondir").unlink()
    (dotgit / "HEAD").write_text("ref: refs/heads/borrowed/main\n")
    (dotgit / "refs" / "heads" / "borrowed").symlink_to(host_repo / ".git" / "refs" / "heads")
    assert_unread(project)


def test_worktrees_and_submodules_are_read(tmp_path: Path, repo: Path) -> None:
    head = committed(repo, {"f": "x\n"})
    worktree = tmp_path / "wt"
    sh_git(repo, "worktree", "add", "-q", "--detach", str(worktree))
    assert commit_and_dirty(str(worktree)) == (head, False)
    (worktree / "f").write_text("y\n")
    assert commit_and_dirty(str(worktree)) == (head, True)
    assert "+y" in uncommitted_diff(str(worktree))[0]

    library = tmp_path / "library"
    lib_head = committed(library, {"lib.py": "a = 1\n"})
    sh_git(repo, "submodule", "add", "-q", str(library), "lib")
    sh_git(repo, "commit", "-qm", "with lib")
    assert (repo / "lib" / ".git").is_file()
    assert commit_and_dirty(str(repo / "lib")) == (lib_head, False)
    (repo / "lib" / "lib.py").write_text("a = 2\n")
    assert commit_and_dirty(str(repo / "lib")) == (lib_head, True)
    # a project inside the superproject whose .git names the library's folder: not its own
    other = repo / "other"
    other.mkdir()
    (other / ".git").write_text("gitdir: ../.git/modules/lib\n")
    (other / "lib.py").write_text("a = 3\n")
    assert_unread(other)
    modules = repo / ".git" / "modules" / "lib"
    subprocess.run(["git", "config", "-f", str(modules / "config"), "--unset", "core.worktree"])
    assert_unread(other)  # (libgit2 would take the `.git` file's folder as its work tree)


def test_a_fifo_planted_in_the_repository_stops_the_read_not_envd(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libgit2 waits in open() on a FIFO (a `.gitattributes`, an included config) holding the
    GIL: in the reader process that costs the read, killed at its timeout, and not the daemon;
    the repository is then left unread for a while instead of costing every enter the wait."""
    committed(repo, {"f": "x\n", ".gitattributes": "\n"})
    monkeypatch.setattr(git, "_STATE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(git, "_DIFF_TIMEOUT_S", 1.0)
    (repo / ".gitattributes").unlink()
    os.mkfifo(repo / ".gitattributes")
    (repo / "f").write_text("y\n")  # the same size: status reads it, through its attributes
    assert commit_and_dirty(str(repo)) == ("", False)
    assert uncommitted_diff(str(repo)) == ("", "", False)  # at once: the repository is stuck
    assert commit_and_dirty(str(repo)) == ("", False)
    assert stat.S_ISFIFO(os.lstat(repo / ".gitattributes").st_mode)
