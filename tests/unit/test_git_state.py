"""A run's commit and dirty flag: one `git status` per run, none outside any repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from envd.gateways import git
from envd.gateways.git import commit_and_dirty


def sh_git(repo: Path, *args: str) -> str:
    argv = ["git", "-c", "user.email=t@t", "-c", "user.name=t", "-C", str(repo), *args]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


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
    assert git._commit_and_dirty_two_calls(str(repo)) == (head, False)  # the fallback agrees


def test_no_git_runs_outside_any_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("the temporary folder is inside a git checkout")

    def no_git(*args: Any, **kw: Any) -> Any:
        raise AssertionError("git was started")

    monkeypatch.setattr(git, "run", no_git)
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert commit_and_dirty(str(tmp_path)) == ("", False)


def test_git_dir_in_the_environment_still_asks_git(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "f").write_text("x")
    sh_git(repo, "add", "f")
    sh_git(repo, "commit", "-qm", "x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert commit_and_dirty(str(elsewhere))[0] == sh_git(repo, "rev-parse", "HEAD")


def test_a_symlink_into_a_repository_finds_it(tmp_path: Path, repo: Path) -> None:
    (repo / "f").write_text("x")
    sh_git(repo, "add", "f")
    sh_git(repo, "commit", "-qm", "x")
    (repo / "inner").mkdir()
    link = tmp_path / "link"
    link.symlink_to(repo / "inner")
    assert commit_and_dirty(str(link))[0] == sh_git(repo, "rev-parse", "HEAD")


def test_no_diff_and_no_git_outside_any_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if any((p / ".git").exists() for p in (tmp_path, *tmp_path.parents)):
        pytest.skip("the temporary folder is inside a git checkout")

    def no_git(*args: Any, **kw: Any) -> Any:
        raise AssertionError("git was started")

    monkeypatch.setattr(git, "run", no_git)
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert git.uncommitted_diff(str(tmp_path)) == ("", "", False)


def test_the_diff_of_a_repository_is_read(repo: Path) -> None:
    (repo / "f").write_text("x\n")
    sh_git(repo, "add", "f")
    sh_git(repo, "commit", "-qm", "x")
    (repo / "f").write_text("y\n")
    diff, digest, cut = git.uncommitted_diff(str(repo))
    assert "-x\n+y" in diff and len(digest) == 64 and not cut
