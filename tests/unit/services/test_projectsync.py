"""Syncing a project with a volume on a remote engine: the plan, conflicts, and the service."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from envd.model.projectsync import (
    FILE,
    LINK,
    Entry,
    Stat,
    Synced,
    SyncState,
    fetch_groups,
    find_script,
    mtime_ns,
    parse_find,
    parse_sha256sum,
    plan,
    state_from_json,
    state_to_json,
)
from envd.progress import Progress
from envd.services.projectsync import ProjectSync, scan_host
from tests.fakes.volume import FakeVolume


def e(sha: str, mode: int = 0o644) -> Entry:
    return Entry(FILE, sha, mode, "", 1)


def base(**files: str) -> dict[str, Synced]:
    return {p: Synced(e(sha), (1, 1), (1, 1)) for p, sha in files.items()}


# ---------------------------------------------------------------- the three-way plan


def test_unchanged_on_both_sides_moves_nothing() -> None:
    b = base(a="1", b="2")
    assert plan(b, {"a": e("1"), "b": e("2")}).empty
    assert plan(b, {"a": e("1"), "b": e("2")}, {"a": e("1"), "b": e("2")}).empty


def test_host_changes_go_up_engine_changes_come_back() -> None:
    b = base(kept="1", edited_here="2", gone_here="3", edited_there="4", gone_there="5")
    host = {"kept": e("1"), "edited_here": e("x"), "edited_there": e("4"), "gone_there": e("5"),
            "new_here": e("n")}  # fmt: skip
    engine = {"kept": e("1"), "edited_here": e("2"), "gone_here": e("3"), "edited_there": e("y"),
              "new_there": e("m")}  # fmt: skip
    p = plan(b, host, engine)
    assert p.push == ("edited_here", "new_here")
    assert p.remove_remote == ("gone_here",)
    assert p.pull == (("edited_there", "edited_there"), ("new_there", "new_there"))
    assert p.remove_local == ("gone_there",)
    assert p.conflicts == ()


def test_the_same_change_on_both_sides_is_no_conflict() -> None:
    b = base(a="1", d="2")
    p = plan(b, {"a": e("z"), "new": e("q")}, {"a": e("z"), "new": e("q")})
    assert p.empty and p.conflicts == ()


def test_a_file_changed_on_both_sides_keeps_the_host_copy_and_brings_the_other_beside_it() -> None:
    p = plan(base(data="1"), {"data": e("mine")}, {"data": e("theirs")})
    assert p.push == ("data",)  # the volume gets the host's copy again
    assert p.pull == (("data", "data.envd-remote"),)
    (c,) = p.conflicts
    assert (c.path, c.host, c.engine, c.copy) == ("data", "changed", "changed", "data.envd-remote")
    assert "kept yours" in c.message() and "data.envd-remote" in c.message()


def test_deleted_here_but_changed_there_is_a_conflict_with_their_copy_kept_beside() -> None:
    p = plan(base(data="1"), {}, {"data": e("theirs")})
    assert p.remove_remote == ("data",) and p.pull == (("data", "data.envd-remote"),)
    assert p.conflicts[0].host == "deleted"


def test_changed_here_but_deleted_there_sends_the_host_copy_back() -> None:
    p = plan(base(data="1"), {"data": e("mine")}, {})
    assert p.push == ("data",) and p.pull == ()
    c = p.conflicts[0]
    assert c.engine == "deleted" and c.copy == "" and "gets yours back" in c.message()


def test_an_executable_bit_is_a_change_other_mode_bits_are_not() -> None:
    b = base(run="1")
    assert plan(b, {"run": e("1", 0o755)}).push == ("run",)
    assert plan(b, {"run": e("1", 0o600)}).empty


def test_a_clean_volume_is_taken_to_hold_the_base() -> None:
    p = plan(base(a="1"), {"a": e("2")}, None)
    assert p.push == ("a",) and p.conflicts == ()


# ---------------------------------------------------------------- the engine's listing


def test_find_output_is_parsed_with_exact_nanoseconds_and_ignores() -> None:
    out = (
        b"f\x0012\x001733071234.1234567890\x00755\x00bin/run.sh\x00\x00"
        b"l\x004\x001733071234.5\x00777\x00latest\x00runs/7\x00"
        b"f\x001\x001.0\x00644\x00pkg/__pycache__/m.pyc\x00\x00"
        b"f\x001\x001.0\x00644\x00.git/HEAD\x00\x00"
    )
    got = parse_find(out).files
    assert got == {
        "bin/run.sh": Stat(FILE, 12, 1733071234_123456789, 0o755),
        "latest": Stat(LINK, 4, 1733071234_500000000, 0o777, "runs/7"),
    }
    assert mtime_ns("17") == 17 * 10**9
    assert "-name .git" in find_script("/workspace") and "-printf" in find_script("/workspace")


def test_sha256sum_output_is_matched_to_the_paths_asked() -> None:
    a, b = "a" * 64, "b" * 64
    assert parse_sha256sum(f"{a}  x\n{b}  y\n", ["x", "y"]) == {"x": a, "y": b}
    assert parse_sha256sum(f"{a}  x\n", ["x", "y"]) == {}  # something went wrong: none trusted
    assert parse_sha256sum(f"\\{a}  odd\\nname\n", ["odd\nname"]) == {}


def test_many_small_files_in_a_folder_come_in_one_archive_a_lone_one_by_itself() -> None:
    listing = {f"out/{i}": Stat(FILE, 10, 1, 0o644) for i in range(5)}
    listing |= {"big/huge": Stat(FILE, 10 << 30, 1, 0o644), "big/a": Stat(FILE, 1, 1, 0o644),
                "big/b": Stat(FILE, 1, 1, 0o644), "top": Stat(FILE, 1, 1, 0o644)}  # fmt: skip
    groups = dict(fetch_groups([*(f"out/{i}" for i in range(5)), "big/a", "big/b", "top"], listing))
    assert groups["out"] == frozenset(f"out/{i}" for i in range(5))
    assert groups["big/a"] == {"big/a"} and groups["big/b"] == {"big/b"}  # not the 10 GiB folder
    assert groups["top"] == {"top"}


def test_the_state_survives_json_and_a_damaged_one_is_empty() -> None:
    state = SyncState("v", "t", "tcp://h", base(a="1"))
    assert state_from_json(json.loads(json.dumps(state_to_json(state)))) == state
    assert state_from_json({"version": 1, "files": {"a": [1]}}) == SyncState()
    assert state_from_json([]) == SyncState()


# ---------------------------------------------------------------- the service, on a fake volume


class Project:
    def __init__(self, tmp_path: Path, **kw: object) -> None:
        self.root = tmp_path / "proj"
        self.root.mkdir(parents=True)
        self.state = tmp_path / "home" / "sync"
        self.volume = FakeVolume()
        self.sync = self.new_service(**kw)
        self.progress: list[Progress] = []

    def new_service(self, **kw: object) -> ProjectSync:
        self.kw = kw or getattr(self, "kw", {})
        return ProjectSync(self.volume, self.state, "envd-abc", "owner", "tcp://h:1", **self.kw)  # type: ignore[arg-type]

    def write(self, rel: str, text: str | bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    def up(self, data: tuple[str, ...] = ()) -> list[str]:
        self.sync.volume("proj")
        self.volume.calls.clear()
        self.volume.written.clear()
        report = self.sync.up("proj", str(self.root), "cid", 1000, 1000, data, self.progress.append)
        return report.notes

    def down(self, data: tuple[str, ...] = ()) -> list[str]:
        self.volume.calls.clear()
        return self.sync.down("proj", str(self.root), "cid", 1000, 1000, data).notes

    def run(self, command: object = None) -> list[str]:
        """An enter: up, the 'command' (a function of the volume), down."""
        notes = self.up()
        if callable(command):
            command(self.volume)
        return notes + self.down()


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path)
    p.write("train.py", "print('hi')\n")
    p.write("data/a.csv", "1,2\n")
    p.write(".git/HEAD", "ref: refs/heads/main\n")
    p.write("pkg/__pycache__/m.cpython-311.pyc", b"\0")
    return p


def test_the_first_enter_sends_the_project_but_not_git_or_caches(proj: Project) -> None:
    proj.up()
    assert set(proj.volume.files) == {"train.py", "data/a.csv"}
    assert proj.volume.files["train.py"].owner == (1000, 1000)
    assert proj.volume.owned_by == (1000, 1000)  # a fresh volume's top folder


def test_an_unchanged_project_costs_no_engine_call(proj: Project) -> None:
    proj.run()
    assert proj.up() == []
    assert proj.volume.calls == []  # no listing, no transfer: lstat of the host files only


def test_what_a_command_creates_changes_or_deletes_comes_back(proj: Project) -> None:
    proj.run()

    def command(v: FakeVolume) -> None:
        v.edit("out.txt", b"hi\n")
        v.edit("results/model.bin", b"\1\2", mode=0o755)
        v.edit("train.py", b"print('edited there')\n")
        del v.files["data/a.csv"]
        v.link("latest", "results")

    assert proj.run(command) == []
    assert (proj.root / "out.txt").read_text() == "hi\n"
    assert stat.S_IMODE((proj.root / "results/model.bin").stat().st_mode) == 0o755
    assert (proj.root / "train.py").read_text() == "print('edited there')\n"
    assert not (proj.root / "data/a.csv").exists()
    assert os.readlink(proj.root / "latest") == "results"
    assert proj.up() == [] and proj.volume.calls == []  # in step again


def test_a_host_edit_is_sent_alone_and_a_host_deletion_removes_it_there(proj: Project) -> None:
    proj.run()
    proj.write("train.py", "print('edited here')\n")
    (proj.root / "data/a.csv").unlink()
    proj.up()
    assert proj.volume.written == [["train.py"]]
    assert proj.volume.text("train.py") == "print('edited here')\n"
    assert "data/a.csv" not in proj.volume.files


def test_a_file_changed_on_both_sides_is_named_and_the_host_copy_kept(proj: Project) -> None:
    proj.run()
    proj.up()
    proj.volume.edit("train.py", b"theirs\n")  # a command still running, say
    proj.write("train.py", "mine\n")
    notes = proj.down()
    assert len(notes) == 1 and "train.py" in notes[0] and "train.py.envd-remote" in notes[0]
    assert (proj.root / "train.py").read_text() == "mine\n"
    assert (proj.root / "train.py.envd-remote").read_text() == "theirs\n"
    assert proj.volume.text("train.py") == "mine\n"
    assert "train.py.envd-remote" not in proj.volume.files  # the copy is the user's, here
    assert proj.run() == []  # resolved: no conflict again


def test_a_touched_but_unchanged_file_is_hashed_there_not_fetched(proj: Project) -> None:
    proj.run()
    proj.up()
    proj.volume.touch("data/a.csv")
    proj.down()
    assert "read" not in proj.volume.calls and "hashes" in proj.volume.calls


def test_without_sha256sum_a_moved_file_is_fetched_and_hashed_here(proj: Project) -> None:
    proj.volume.hashing = False
    proj.run()
    proj.up()
    proj.volume.edit("data/a.csv", b"3,4\n")
    assert proj.down() == []
    assert (proj.root / "data/a.csv").read_text() == "3,4\n"
    assert proj.up() == [] and proj.volume.calls == []


def test_files_over_the_bound_stay_unless_runs_declares_them(tmp_path: Path) -> None:
    p = Project(tmp_path, max_file_bytes=100)
    p.write("small.txt", "x")
    p.write("big.bin", b"\0" * 1000)
    p.write("data/big.parquet", b"\1" * 1000)
    notes = p.up(data=("data/",))
    assert set(p.volume.files) == {"small.txt", "data/big.parquet"}
    assert len(notes) == 1 and "big.bin" in notes[0] and "runs:" in notes[0]
    p.volume.edit("ckpt.pt", b"\2" * 1000)
    assert any("ckpt.pt" in n and "on the engine" in n for n in p.down(data=("data/",)))
    assert not (p.root / "ckpt.pt").exists()


def test_the_state_is_private_and_survives_a_daemon_restart(proj: Project) -> None:
    proj.run()
    (state_file,) = proj.state.glob("*.json")
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    proj.sync = proj.new_service()
    assert proj.up() == [] and proj.volume.calls == []  # the stored state is read


def test_what_a_command_made_while_the_daemon_restarted_comes_back_with_the_next(
    proj: Project,
) -> None:
    proj.run()
    proj.up()
    proj.volume.edit("out.txt", b"made while the daemon restarted\n")
    proj.sync = proj.new_service()  # the command's sync back never came
    proj.run()
    assert (proj.root / "out.txt").read_text() == "made while the daemon restarted\n"


def test_a_new_volume_gets_everything_again_and_nothing_here_is_deleted(proj: Project) -> None:
    proj.run()
    proj.volume.files.clear()  # `docker volume rm`, a new one of the same name
    proj.volume.created = "2026-12-02T00:00:00Z"
    proj.run()
    assert (proj.root / "train.py").exists() and (proj.root / "data/a.csv").exists()
    assert set(proj.volume.files) == {"train.py", "data/a.csv"}


def test_large_transfers_report_progress(tmp_path: Path) -> None:
    p = Project(tmp_path)
    p.write("weights.bin", b"\0" * (9 << 20))
    p.write("small.txt", "x")
    p.up()
    sending = [x for x in p.progress if x.step == "sync"]
    assert sending and sending[-1].message == "sending weights.bin"
    assert sending[-1].current == sending[-1].total == 9 << 20


def test_the_engine_cannot_write_through_a_link_out_of_the_project(
    proj: Project, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    proj.run()
    os.symlink(outside, proj.root / "escape")
    proj.up()
    proj.volume.files["escape/evil.sh"] = proj.volume.files["train.py"]
    proj.volume.touch("escape/evil.sh")
    proj.down()
    assert list(outside.iterdir()) == []


def test_the_host_scan_lists_files_and_links_only(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.symlink("d/f", tmp_path / "l")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "x.envd-remote").write_text("a conflict copy")
    got = scan_host(str(tmp_path))
    assert set(got) == {"d/f", "l"} and got["l"] == Stat(LINK, 0, got["l"].mtime_ns, 0o777, "d/f")


# ---------------------------------------------------------------- enter on a remote engine


def test_enter_on_a_remote_engine_mounts_the_volume_and_brings_files_back(tmp_path: Path) -> None:
    from tests.unit.services.test_entering import close, make_world

    volume = FakeVolume()
    sync = ProjectSync(volume, tmp_path / "sync", "envd-abc", "owner", "tcp://h:1")
    w = make_world(tmp_path, sync=sync)
    try:
        plan_ = w.enter("sh", "-c", "echo hi > out.txt")
        (options,) = w.engine.options
        (mount,) = options["mounts"]
        assert (mount.source, mount.target, mount.volume) == ("envd-abc-project-proj",
                                                              "/workspace", True)  # fmt: skip
        assert "envd.yaml" in volume.files and plan_.sync_id
        volume.edit("out.txt", b"hi\n")  # what the command did
        assert w.entering.sync_back(plan_.sync_id) == []
        assert (w.project / "out.txt").read_text() == "hi\n"
        assert w.entering.sync_back(plan_.sync_id) == []  # once only
        w.entering.finish(plan_.run_id, 0)
        shell = w.enter()  # a login shell syncs back too
        assert shell.run_id == "" and shell.sync_id
    finally:
        close(w)


def test_enter_on_a_local_engine_bind_mounts_and_never_syncs(tmp_path: Path) -> None:
    from tests.unit.services.test_entering import close, make_world

    w = make_world(tmp_path)
    try:
        plan_ = w.enter("true")
        (mount,) = w.engine.options[0]["mounts"]
        assert not mount.volume and mount.source == str(w.project) and plan_.sync_id == ""
    finally:
        close(w)


def test_a_change_there_outside_envd_is_not_overwritten_by_a_host_edit(proj: Project) -> None:
    proj.run()
    proj.volume.edit("train.py", b"edited by a docker exec\n")
    proj.write("train.py", "mine\n")
    notes = proj.up()
    assert len(notes) == 1 and "conflict: train.py" in notes[0]
    assert (proj.root / "train.py.envd-remote").read_text() == "edited by a docker exec\n"
    assert proj.volume.text("train.py") == "mine\n"


def test_the_fast_path_on_a_remote_engine_is_a_docker_exec_plan_synced_both_ways(
    tmp_path: Path,
) -> None:
    from envd.paths import run_pid_file
    from envd.services.entering import EnterCall
    from tests.unit.services.test_entering import close, make_world

    volume = FakeVolume()
    w = make_world(tmp_path, sync=ProjectSync(volume, tmp_path / "s", "ns", "o", "tcp://h:1"))
    try:
        call = EnterCall(str(w.project), ("make",), fast=True, tty=True, term="xterm-kitty")
        plan_ = w.entering.prepare(call, lambda p: None)
        # No agent there: the daemon runs `docker exec`, which passes no signals on, so the
        # command keeps its pid where a `kill` in the container finds it (TTY or not).
        assert plan_.agent_socket == "" and plan_.sync_id and plan_.run_id
        assert plan_.argv[-1] == "make" and run_pid_file(plan_.run_id) in plan_.argv[2]
        assert plan_.env["TERM"] == "xterm-kitty"
        assert "envd.yaml" in volume.files  # synced up before it starts
        volume.edit("built.txt", b"ok\n")
        assert w.entering.sync_back(plan_.sync_id) == []
        assert (w.project / "built.txt").read_text() == "ok\n"
        # The warm container that fits holds its volume: the next enter asks nothing of it.
        looked = volume.calls.count("ensure_volume")
        again = w.entering.prepare(call, lambda p: None)
        assert again.container_id == plan_.container_id
        assert volume.calls.count("ensure_volume") == looked
    finally:
        close(w)


def test_a_file_there_where_a_folder_is_here_is_named_and_tried_again(proj: Project) -> None:
    proj.run()
    proj.up()
    proj.volume.edit("data", b"a file on the engine\n")  # here, data/ is a folder
    notes = proj.down()
    assert any("not brought back: data" in n for n in notes)
    assert (proj.root / "data" / "a.csv").read_text() == "1,2\n"
    assert any("not brought back: data" in n for n in proj.run())  # not forgotten


# ---------------------------------------------------------------- trust: what the engine says


def test_an_incomplete_listing_plans_no_deletion_and_holds_what_it_left_out() -> None:
    b = base(kept="1", unlisted="2", edited_here="3")
    host = {"kept": e("1"), "unlisted": e("2"), "edited_here": e("x")}
    engine = {"kept": e("1"), "new_there": e("n")}  # find failed part way
    p = plan(b, host, engine, complete=False)
    assert p.remove_local == () and p.push == () and p.conflicts == ()
    assert p.pull == (("new_there", "new_there"),)  # pulls still proceed
    assert set(p.held) == {"unlisted", "edited_here"}
    assert plan(b, host, engine).remove_local == ("unlisted",)  # (when complete)


def test_a_failing_find_is_an_incomplete_listing_and_unsafe_names_are_refused() -> None:
    record = b"f\x001\x001.0\x00644\x00%s\x00\x00"
    out = record % b"ok.txt" + record % b"../../etc/passwd" + record % b"a\nb"
    listing = parse_find(out, 1)
    assert set(listing.files) == {"ok.txt"} and not listing.complete
    assert "status 1" in listing.why
    assert listing.refused == ("../../etc/passwd", "a\nb")
    assert parse_find(out).complete  # refused names are left out on both sides alike
    assert not parse_find(record % b"ok.txt" + b"f\x001").complete  # cut off part way
    assert not parse_find(b"f\x00big\x001.0\x00644\x00x\x00\x00").complete  # not a size


def test_a_partial_listing_deletes_nothing_here_and_the_next_full_one_does(
    proj: Project,
) -> None:
    proj.write("data/b.csv", "5,6\n")
    proj.run()
    proj.volume.edit("new.txt", b"made there\n")
    proj.volume.hidden = frozenset({"train.py", "data/a.csv"})  # find exit 1: left out
    notes = proj.down()
    assert (proj.root / "train.py").exists() and (proj.root / "data/a.csv").exists()
    assert (proj.root / "new.txt").read_text() == "made there\n"  # pulls proceed
    assert any("incomplete" in n and "nothing was deleted" in n for n in notes)
    proj.volume.hidden = frozenset()
    del proj.volume.files["data/a.csv"]  # a real deletion, seen by a complete listing
    assert proj.down() == []
    assert not (proj.root / "data/a.csv").exists() and (proj.root / "train.py").exists()


def test_a_host_edit_to_a_path_left_out_of_the_listing_is_not_lost(proj: Project) -> None:
    proj.run()
    proj.volume.hidden = frozenset({"train.py"})
    proj.write("train.py", "mine\n")
    proj.up()
    assert proj.volume.text("train.py") == "print('hi')\n"  # held, not sent blindly
    proj.volume.hidden = frozenset()
    assert proj.up() == []
    assert proj.volume.text("train.py") == "mine\n"  # sent once the listing is whole


class Growing(FakeVolume):
    """A volume whose files grow between the listing and the archive (a command still
    writing): the archive's member is larger than the listing said."""

    grow: dict[str, bytes] = {}

    def read(self, container, workdir, groups, on_member, on_bytes=None):  # type: ignore[no-untyped-def]
        for path, data in self.grow.items():
            self.files[path].data = data
        super().read(container, workdir, groups, on_member, on_bytes)


def test_a_synced_file_grown_over_the_bound_there_is_not_brought_back(tmp_path: Path) -> None:
    p = Project(tmp_path, max_file_bytes=100)
    p.write("known.txt", "small\n")
    p.run()
    p.volume.edit("known.txt", b"\0" * 1000)
    notes = p.down()
    assert (p.root / "known.txt").read_text() == "small\n"  # the host copy is kept
    assert any("known.txt" in n and "bound" in n for n in notes)
    assert "known.txt" in p.volume.files  # and nothing deleted on either side
    assert p.volume.files["known.txt"].data == b"\0" * 1000


def test_bytes_are_counted_as_they_arrive_not_as_listed(tmp_path: Path) -> None:
    p = Project(tmp_path, max_file_bytes=100)
    p.volume = Growing()
    p.sync = p.new_service()
    p.write("known.txt", "small\n")
    p.run()
    p.volume.edit("known.txt", b"edited\n")  # listed at 7 bytes ...
    p.volume.grow = {"known.txt": b"\1" * 5000}  # ... 5000 arrive
    notes = p.down()
    assert (p.root / "known.txt").read_text() == "small\n"
    assert any("known.txt" in n and "4.9 KiB arriving" in n for n in notes)
    assert not [f for f in os.listdir(p.root) if f.endswith(".tmp")]  # nothing half-written


class Lying(FakeVolume):
    """An archive whose member's data runs past the size in its header."""

    def read(self, container, workdir, groups, on_member, on_bytes=None):  # type: ignore[no-untyped-def]
        for _, wanted in groups:
            for path in sorted(wanted):
                info = tarfile.TarInfo(path)
                info.size = len(self.files[path].data)
                on_member(path, info, io.BytesIO(self.files[path].data + b"\2" * 10_000))


def test_more_bytes_than_the_header_said_are_not_written(tmp_path: Path) -> None:
    p = Project(tmp_path)
    p.volume = Lying()
    p.sync = p.new_service()
    p.write("known.txt", "small\n")
    p.run()
    p.volume.edit("known.txt", b"edited\n")
    notes = p.down()
    assert (p.root / "known.txt").read_text() == "small\n"
    assert any("more bytes arrived" in n for n in notes)
    assert not [f for f in os.listdir(p.root) if f.endswith(".tmp")]


def test_a_sync_brings_back_a_bounded_total_and_keeps_the_host_disk_free(tmp_path: Path) -> None:
    p = Project(tmp_path, max_file_bytes=100, max_sync_bytes=150)
    p.run()
    for name in ("a", "b", "c"):
        p.volume.edit(f"out/{name}.bin", b"\0" * 80)
    notes = p.down()
    arrived = sorted(os.listdir(p.root / "out"))
    assert len(arrived) == 1 and any("a sync brings back" in n for n in notes)
    p.down()
    assert len(os.listdir(p.root / "out")) == 2  # the next sync brings more

    q = Project(tmp_path / "q", free=lambda path: 10)  # type: ignore[arg-type]
    q.run()
    q.volume.edit("results/model.bin", b"\0" * 80)  # declared: any size, but not a full disk
    notes = q.down(data=("results/",))
    assert not (q.root / "results").exists()
    assert any("free" in n for n in notes)


def test_a_link_deleted_there_is_deleted_here_and_not_sent_back(proj: Project) -> None:
    os.symlink("train.py", proj.root / "made_here")
    proj.run()
    proj.volume.link("made_there", "data")
    proj.down()
    assert os.readlink(proj.root / "made_there") == "data"
    del proj.volume.files["made_here"], proj.volume.files["made_there"]
    proj.down()
    assert not os.path.lexists(proj.root / "made_here")
    assert not os.path.lexists(proj.root / "made_there")
    proj.up()
    assert "made_here" not in proj.volume.files and "made_there" not in proj.volume.files


def test_a_link_replaced_by_a_folder_there_becomes_that_folder_here(
    proj: Project, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, proj.root / "evil")
    proj.run()
    del proj.volume.files["evil"]
    proj.volume.edit("evil/pwn.txt", b"made by the command\n")
    notes = proj.down()
    assert list(outside.iterdir()) == []
    assert not (proj.root / "evil").is_symlink()
    assert (proj.root / "evil" / "pwn.txt").read_text() == "made by the command\n"
    assert notes == []
    proj.up()
    assert proj.volume.text("evil/pwn.txt") == "made by the command\n"
    assert "evil" not in proj.volume.files


def test_a_link_changed_here_is_not_sent_over_a_folder_there(proj: Project) -> None:
    os.symlink("data", proj.root / "ln")
    proj.run()
    del proj.volume.files["ln"]
    proj.volume.edit("ln/kept.txt", b"theirs\n")
    os.unlink(proj.root / "ln")
    os.symlink("elsewhere", proj.root / "ln")  # changed here too
    notes = proj.down()
    assert any("ln is a file or link here and a folder on the engine" in n for n in notes)
    proj.up()
    assert proj.volume.text("ln/kept.txt") == "theirs\n" and "ln" not in proj.volume.files


def test_a_name_refused_on_both_sides_is_never_deleted_or_sent(proj: Project) -> None:
    proj.write("odd\\name.txt", "kept here\n")
    proj.run()
    assert "odd\\name.txt" not in proj.volume.files  # never sent
    proj.volume.edit("odd\\name.txt", b"theirs\n")
    proj.volume.edit("..", b"not a file name\n")
    proj.run()
    assert (proj.root / "odd\\name.txt").read_text() == "kept here\n"
