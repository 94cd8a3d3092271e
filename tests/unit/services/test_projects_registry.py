"""The project registry follows envd.yaml's `name:`; init leaves nothing behind when it fails;
a project whose directory is gone does not hold its name forever."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from envd.errors import Conflict, NotFound
from envd.events import EventBus
from envd.gateways.store import RunRow, Store
from envd.services.projects import Projects


class Recorded(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def publish(self, kind: str, project: str = "", message: str = "", **fields: str) -> None:
        self.seen.append((kind, project, message))
        super().publish(kind, project, message, **fields)


@pytest.fixture
def registry(tmp_path: Path) -> tuple[Projects, Store, Recorded]:
    store = Store(tmp_path / "state.db")
    events = Recorded()
    return Projects(store, events), store, events


def make(tmp_path: Path, folder: str, name: str | None) -> Path:
    path = tmp_path / folder
    path.mkdir(parents=True, exist_ok=True)
    spec = "base: {image: 'python:3.11-slim'}\n"
    (path / "envd.yaml").write_text(spec + (f"name: {name}\n" if name else ""))
    return path


def rename(path: Path, name: str) -> None:
    text = (path / "envd.yaml").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("name:")]
    (path / "envd.yaml").write_text("\n".join([*lines, f"name: {name}"]) + "\n")


def a_run(run_id: str, project: str) -> RunRow:
    return RunRow(
        run_id, project, ("true",), "envd/x:1", time.time(), 0, 0, False, "", "", "", False
    )


def test_a_changed_name_is_followed_with_its_images_and_runs(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, store, _ = registry
    path = make(tmp_path, "churn", "churn")
    projects.add(path)
    store.set_project_image("churn", "envd/churn:0123", "lockhash")
    store.record_image("envd/churn:0123", "sha256:aa", "churn", "project", "k", "lockhash", 1)
    store.start_run(a_run("abcdef012345", "churn"))
    rename(path, "attrition")

    row = projects.resolve("attrition")  # the new name finds it
    assert (row.name, row.path, row.image) == ("attrition", str(path), "envd/churn:0123")
    assert store.project_by_name("churn") is None
    assert [r.id for r in store.runs("attrition")] == ["abcdef012345"]
    assert store.runs("churn") == []
    image = store.image("envd/churn:0123")
    assert image is not None and image.project == "attrition"
    assert [p.name for p in projects.list()] == ["attrition"]


def test_the_old_name_and_the_path_also_follow_the_rename(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, _ = registry
    path = make(tmp_path, "churn", "churn")
    projects.add(path)
    rename(path, "one")
    assert projects.resolve("churn").name == "one"
    rename(path, "two")
    assert projects.resolve(str(path)).name == "two"
    rename(path, "three")
    assert projects.resolve_registered("three").name == "three"
    rename(path, "four")
    assert [p.name for p in projects.list()] == ["four"]  # listing follows it too


def test_a_rename_onto_a_live_projects_name_is_refused(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, _ = registry
    one = make(tmp_path, "one", "one")
    two = make(tmp_path, "two", "two")
    projects.add(one)
    projects.add(two)
    rename(two, "one")
    with pytest.raises(Conflict) as info:
        projects.resolve(str(two))
    assert "already used by" in info.value.message and str(one) in info.value.message
    assert {p.name: p.path for p in projects.list()} == {"one": str(one), "two": str(two)}
    # forgetting it still works under its registered name
    assert projects.remove("two").path == str(two)


def test_init_leaves_nothing_behind_when_registering_fails(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, _ = registry
    projects.add(make(tmp_path, "first/churn", None))
    target = tmp_path / "second" / "deeper" / "churn"
    with pytest.raises(Conflict):
        projects.init(target, "default")
    assert not (target / "envd.yaml").exists()
    assert not (tmp_path / "second").exists()  # the folders it made went too
    existing = tmp_path / "third" / "churn"
    existing.mkdir(parents=True)
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(Conflict):
        projects.init(existing, "default")
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def test_init_registers_and_writes_when_it_can(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, _ = registry
    row = projects.init(tmp_path / "fresh", "default")
    assert row.name == "fresh" and (tmp_path / "fresh" / "envd.yaml").is_file()
    with pytest.raises(NotFound):
        projects.init(tmp_path / "nope", "no-such-template")
    assert not (tmp_path / "nope").exists()


def test_a_gone_projects_name_is_taken_over_with_a_notice(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, events = registry
    old = make(tmp_path, "old/churn", "churn")
    projects.add(old)
    shutil.rmtree(old)
    new = make(tmp_path, "new/churn", "churn")
    row = projects.add(new)
    assert (row.name, row.path) == ("churn", str(new))
    replaced = [k for k in events.seen if k[0] == "project.replaced"]
    assert replaced and str(old) in replaced[0][2] and "is gone" in replaced[0][2]


def test_a_live_projects_name_is_still_refused(
    registry: tuple[Projects, Store, Recorded], tmp_path: Path
) -> None:
    projects, _, _ = registry
    first = make(tmp_path, "a/same", None)
    projects.add(first)
    with pytest.raises(Conflict):
        projects.add(make(tmp_path, "b/same", None))
    # ...unless the first one's envd.yaml gave it another name meanwhile
    rename(first, "other")
    row = projects.add(tmp_path / "b" / "same")
    assert row.name == "same"
    assert {p.name for p in projects.list()} == {"other", "same"}
