"""Files envd reads on the user's behalf from a project (envd.yaml, what it names, envd.lock)
must be regular files inside the project, also after links: a link to a file outside (a
cloned repository's envd.yaml -> ~/.ssh/config, say) is refused with a fix, never read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envd.errors import EXIT_USER, LockError, SpecError
from envd.events import EventBus
from envd.gateways import projectfiles
from envd.gateways.projectfiles import load_spec, read_lock
from envd.gateways.store import Store
from envd.model.lockfile import dumps
from envd.services.projects import Projects
from tests.unit.model.test_lockfile import make_lock

SPEC = "base: {debian: bookworm}\n"


@pytest.fixture(autouse=True)
def fresh_parses() -> None:
    projectfiles.forget_parses()


def project(tmp_path: Path) -> Path:
    path = tmp_path / "proj"
    path.mkdir(parents=True)
    return path


def test_envd_yaml_linked_outside_the_project_is_refused_unread(tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(SPEC + "name: stolen\n")
    root = project(tmp_path)
    (root / "envd.yaml").symlink_to(tmp_path / "outside.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec(root)
    err = caught.value
    assert err.exit_code == EXIT_USER
    assert err.file == str(root / "envd.yaml")
    assert f"points to {tmp_path / 'outside.yaml'}, outside the project" in err.message
    assert err.hint is not None and "copy the file into the project" in err.hint
    # a link to a file inside the project still reads
    (root / "config").mkdir()
    (root / "config" / "envd.yaml").write_text(SPEC + "name: inside\n")
    (root / "envd.yaml").unlink()
    (root / "envd.yaml").symlink_to("config/envd.yaml")
    assert load_spec(root).name == "inside"


def test_envd_yaml_in_a_folder_linked_outside_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "envd.yaml").write_text(SPEC)
    (tmp_path / "proj").symlink_to(tmp_path / "elsewhere")  # the project itself may be a link
    assert load_spec(tmp_path / "proj").name == "elsewhere"
    inner = project(tmp_path / "b")
    (inner / "conf").symlink_to(tmp_path / "elsewhere")
    (inner / "envd.yaml").symlink_to("conf/envd.yaml")
    with pytest.raises(SpecError, match="outside the project"):
        load_spec(inner)


def test_a_project_whose_envd_yaml_is_a_fifo_is_told_so_not_that_it_has_none(
    tmp_path: Path,
) -> None:
    root = project(tmp_path)
    os.mkfifo(root / "envd.yaml")
    projects = Projects(Store(tmp_path / "state.db"), EventBus())
    with pytest.raises(SpecError) as caught:
        projects.add(root)
    assert "is a named pipe (FIFO), not a regular file" in caught.value.message
    assert caught.value.exit_code == EXIT_USER


def test_a_project_whose_envd_yaml_is_dev_zero_is_told_so(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "envd.yaml").symlink_to("/dev/zero")
    projects = Projects(Store(tmp_path / "state.db"), EventBus())
    with pytest.raises(SpecError, match="is a character device, not a regular file"):
        projects.add(root)


def test_envd_lock_linked_outside_the_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.lock").write_text(dumps(make_lock()))
    root = project(tmp_path)
    (root / "envd.lock").symlink_to(tmp_path / "outside.lock")
    with pytest.raises(LockError, match="outside the project"):
        read_lock(root / "envd.lock")


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(tmp_path: Path) -> None:
    # what a container racing the daemon could do: read_beneath opens the checked path one
    # component at a time without following links, so the swap fails the read
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "r.txt").write_text("stolen\n")
    root = project(tmp_path)
    (root / "reqs").mkdir()
    (root / "reqs" / "r.txt").write_text("six\n")
    real_resolve = Path.resolve

    def swapped_after_resolve(self: Path, strict: bool = False) -> Path:
        resolved = real_resolve(self, strict=strict)
        if self.name == "r.txt" and (root / "reqs").is_dir() and not (root / "reqs").is_symlink():
            (root / "reqs" / "r.txt").unlink()
            (root / "reqs").rmdir()
            (root / "reqs").symlink_to(tmp_path / "secret")
        return resolved

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "resolve", swapped_after_resolve)
        with pytest.raises(projectfiles._NotReadable, match="changed while envd read it"):
            projectfiles.read_beneath(real_resolve(root), "reqs/r.txt", 1024)
