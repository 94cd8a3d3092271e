"""Preparing an enter with a fake engine and builder: image, container, user, exec target, runs."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from envd.config import Config
from envd.errors import BuildFailed, EngineUnavailable, NotFound, SpecError, UsageError
from envd.events import EventBus
from envd.gateways.engine import ContainerInfo, EngineInfo, ImageInfo, Mount
from envd.gateways.store import Store
from envd.model.host import GpuDevice, HostInfo
from envd.paths import run_pid_file
from envd.progress import Progress
from envd.services import images as images_service
from envd.services.entering import (
    SHELL,
    EnterCall,
    Entering,
    NoAgent,
    gpu_requests,
    safe_user_name,
    workdir_for,
    wrap_for_signals,
)
from envd.services.projects import Projects
from envd.services.runs import Runs
from envd.services.warm import WarmContainers
from tests.fakes.engine import FakeEngine

SPEC = """\
version: 1
name: proj
base: {debian: bookworm}
python: "3.11"
packages: [numpy]
env: {PYTHONHASHSEED: "0"}
ports: [8888]
"""


class Engine(FakeEngine):
    """The fake engine, plus what `enter` asks of the real one: info() and the start options."""

    def __init__(self, runtimes: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.runtimes = runtimes
        self.info_calls = 0
        self.options: list[dict[str, Any]] = []
        self.images_removed: set[str] = set()  # images removed behind envd's back
        self.image_lookups: list[str] = []

    def inspect_image(self, ref: str) -> ImageInfo | None:
        self.image_lookups.append(ref)
        return None if ref in self.images_removed else ImageInfo(ref, (ref,), {}, 1, (), ())

    def info(self) -> EngineInfo:
        self.info_calls += 1
        return EngineInfo(reachable=True, version="20.10", runtimes=self.runtimes)

    def start_container(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        labels: Mapping[str, str] | None = None,
        workdir: str = "",
        device_requests: Sequence[Mapping[str, Any]] = (),
        ports: Sequence[int] = (),
    ) -> ContainerInfo:
        self.options.append(
            {
                "command": list(command),
                "mounts": list(mounts),
                "workdir": workdir,
                "devices": list(device_requests),
                "ports": list(ports),
            }
        )
        return super().start_container(name, image, command, labels=labels)


@dataclass
class Outcome:
    image: str
    image_id: str


@dataclass
class Builder:
    """Builds on request; `current` is what current_image answers (None: needs a build)."""

    store: Store
    current: str | None = None
    fail: bool = False
    builds: list[str] = field(default_factory=list)

    def current_image(self, row: Any) -> str | None:
        return self.current

    def up_to_date(self, row: Any) -> Outcome | None:
        """A build's outcome when it would run nothing: the current image, when recorded."""
        record = self.store.image(self.current) if self.current is not None else None
        return Outcome(record.image, record.image_id) if record is not None else None

    def build(self, row: Any, progress: Any) -> Outcome:
        self.builds.append(row.name)
        progress(Progress("packages", "installing"))
        if self.fail:
            raise BuildFailed("build step `packages` of proj failed (exit 1)", hint="builder's")
        n = len(self.builds)
        tag, image_id = f"envd/{row.name}:{n:012d}", f"sha256:{n:064d}"
        self.store.record_image(tag, image_id, row.name, "project", "", "", 0)
        self.store.set_project_image(row.name, tag, "")
        self.current = tag
        return Outcome(tag, image_id)


def host(gpus: int = 0) -> HostInfo:
    return HostInfo(
        cpu_model="test",
        arch="x86_64",
        cpu_count=2,
        memory_bytes=1 << 30,
        kernel="6.1",
        os="Debian",
        gpus=tuple(GpuDevice(i, "NVIDIA T4", f"GPU-{i}", 1 << 34, "7.5") for i in range(gpus)),
        driver_version="550.54.15" if gpus else "",
        cuda_driver_version="12.4" if gpus else "",
        gpu_error="" if gpus else "no NVIDIA GPU: NVML lists none",
    )


class Images(images_service.Images):
    """The real image records, with the current image decided by the fake builder."""

    def __init__(self, store: Store, engine: Engine, projects: Projects, builder: Builder) -> None:
        super().__init__(store, engine, projects)  # type: ignore[arg-type]
        self.builder = builder

    def current_image(
        self, row: Any, *, check_engine: bool = True, snapshot: Any = None
    ) -> str | None:
        tag = self.builder.current
        if tag is None or not self.recorded(tag):
            return None
        return tag if not check_engine or self.on_engine(tag) else None


@dataclass
class Fingerprints:
    """Hashes recorded for an image (the real service probes images on the engine)."""

    def hashes(self, image_id: str) -> tuple[str, str]:
        return f"env-of-{image_id[-4:]}", "host-hash"


@dataclass
class Host:
    host: HostInfo


class Events(EventBus):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, dict[str, str]]] = []

    def publish(self, kind: str, project: str = "", message: str = "", **fields: str) -> None:
        self.seen.append((kind, project, fields))
        super().publish(kind, project, message, **fields)


@dataclass
class World:
    entering: Entering
    warm: WarmContainers
    store: Store
    fingerprints: Fingerprints
    engine: Engine
    builder: Builder
    project: Path
    events: list[tuple[str, str, dict[str, str]]]
    runs: Runs

    def finish(self, run_id: str, exit_code: int) -> Any:
        """Record the exit status, then read the stored run (no waiting): what a caller told
        the exit status can see at once."""
        self.entering.finish(run_id, exit_code)
        return self.store.run(run_id)

    def enter(self, *command: str, **kw: Any) -> Any:
        call = EnterCall(str(self.project), tuple(command), **kw)
        return self.entering.prepare(call, self.progress.append)

    @property
    def progress(self) -> list[Progress]:
        return self.__dict__.setdefault("_progress", [])


def make_world(
    tmp_path: Path, *, gpus: int = 0, runtimes: tuple[str, ...] = (), sync: Any = None
) -> World:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "envd.yaml").write_text(SPEC)
    engine = Engine(runtimes)
    store = Store(tmp_path / "home" / "envd.db")
    events = Events()
    projects = Projects(store, events)
    builder = Builder(store)
    warm = WarmContainers(engine, events, Config, "test-owner")  # type: ignore[arg-type]
    fingerprints = Fingerprints()
    runs = Runs(store)
    entering = Entering(
        projects,
        Images(store, engine, projects, builder),
        builder,  # type: ignore[arg-type]
        warm,
        fingerprints,  # type: ignore[arg-type]
        runs,
        Host(host(gpus)),  # type: ignore[arg-type]
        engine,  # type: ignore[arg-type]
        events,
        sync,
    )
    return World(entering, warm, store, fingerprints, engine, builder, project, events.seen, runs)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path)
    yield w
    close(w)


def close(w: World) -> None:
    w.entering.wait_provenance()
    w.warm.close()
    w.store.close()


# ---------------------------------------------------------------- image and container


def test_first_enter_builds_then_starts_a_warm_container(world: World) -> None:
    plan = world.enter("python", "train.py")
    assert world.builder.builds == ["proj"]
    assert [p.step for p in world.progress] == ["build", "packages"]
    assert plan.started and plan.container_name == "envd-proj-000000000000"
    (opts,) = world.engine.options
    assert opts["command"] == ["sleep", "infinity"] and opts["workdir"] == "/workspace"
    assert opts["mounts"] == [Mount(str(world.project), "/workspace")]
    assert opts["ports"] == [8888] and opts["devices"] == []
    assert ("container.started", "proj", {"image": "envd/proj:000000000001"}) in world.events


def test_a_fresh_project_is_entered_without_a_build_or_engine_info(world: World) -> None:
    world.enter("true")
    world.progress.clear()
    again = world.enter("true")
    assert world.builder.builds == ["proj"] and world.progress == []
    assert not again.started and len(world.engine.started) == 1
    assert world.engine.info_calls == 0  # a CPU host never asks the engine for its runtimes


def test_a_rebuilt_image_replaces_the_container(world: World) -> None:
    first = world.enter("true")
    world.warm.all()[0].last_used_at -= 60  # its command has long finished
    world.builder.current = None  # envd.yaml changed: the next enter builds
    second = world.enter("true")
    assert second.started and second.container_id != first.container_id
    assert first.container_id in world.engine.removed


def test_a_dead_container_is_replaced_transparently(world: World) -> None:
    first = world.enter("true")
    world.engine.kill(first.container_id)
    second = world.enter("true")
    assert second.started and second.container_id != first.container_id


def test_unknown_project_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no project named `nope`"):
        world.entering.prepare(EnterCall("nope", ("true",)), world.progress.append)


def test_an_invalid_spec_fails_before_any_build(world: World) -> None:
    (world.project / "envd.yaml").write_text(SPEC + "pakages: [x]\n")
    with pytest.raises(SpecError, match="pakages"):
        world.enter("true")
    assert world.builder.builds == [] and world.engine.started == []


def test_a_failed_build_names_the_previous_image(world: World) -> None:
    world.enter("true")
    world.builder.current, world.builder.fail = None, True
    with pytest.raises(BuildFailed) as failed:
        world.enter("true")
    assert "envd/proj:000000000001 is untouched" in (failed.value.hint or "")
    assert len(world.engine.containers) == 1  # the old warm container is still there


def test_a_failed_first_build_keeps_the_builders_hint(world: World) -> None:
    world.builder.fail = True
    with pytest.raises(BuildFailed) as failed:
        world.enter("true")
    assert failed.value.hint == "builder's"


# ---------------------------------------------------------------- exec target


def test_exec_target_for_a_command_without_tty(world: World) -> None:
    plan = world.enter("python", "-c", "pass", uid=1000, gid=100, user_name="ada")
    assert plan.user == "1000:100" and plan.workdir == "/workspace"
    assert plan.env == {
        "HOME": "/home/ada",
        "USER": "ada",
        "ENVD_PROJECT": "proj",
        "ENVD_RUN_ID": plan.run_id,
    }
    assert plan.argv == wrap_for_signals(plan.run_id, ("python", "-c", "pass"))
    assert plan.argv[2].startswith(f"echo $$ > {run_pid_file(plan.run_id)}; exec")
    (setup,) = world.engine.exec_calls
    assert setup[2] == "0" and "ada:x:1000:100::/home/ada" in setup[1][2]


def test_exec_target_with_tty_and_for_a_shell(world: World) -> None:
    assert world.enter("bash", tty=True).argv == ("bash",)
    shell = world.enter(tty=True)
    assert shell.argv == SHELL and shell.run_id == "" and "ENVD_RUN_ID" not in shell.env
    assert world.store.runs("proj", 10)[0].command == ("bash",)
    assert len(world.store.runs("proj", 10)) == 1  # a shell is not a recorded run


def test_a_start_script_runs_every_command_shell_and_fast_path_alike(world: World) -> None:
    (world.project / "envd.yaml").write_text(SPEC + "start: binder/start\n")
    (world.project / "binder").mkdir()
    start = world.project / "binder" / "start"
    start.write_text('#!/bin/sh\nexport A=1\nexec "$@"\n')
    start.chmod(0o755)
    plan = world.enter("python", "-c", "pass")
    through = ("/workspace/binder/start", "python", "-c", "pass")
    assert plan.argv == wrap_for_signals(plan.run_id, through)
    assert world.enter("bash", tty=True).argv == ("/workspace/binder/start", "bash")
    assert world.enter(tty=True).argv == ("/workspace/binder/start", *SHELL)
    warm = world.warm.all()[0]
    warm.agent, warm.agent_user = "/run/agents/x/agent.sock", "1000:100"
    fast = world.enter("true", fast=True, uid=1000, gid=100, user_name="ada")
    assert fast.argv == ("/workspace/binder/start", "true")
    assert world.store.runs("proj", 10)[0].command == ("true",)  # the run is what was asked


def test_a_start_script_that_is_not_executable_names_the_fix(world: World) -> None:
    (world.project / "envd.yaml").write_text(SPEC + "start: start\n")
    (world.project / "start").write_text('#!/bin/sh\nexec "$@"\n')
    with pytest.raises(UsageError, match="not an executable file") as info:
        world.enter("true")
    assert info.value.hint is not None and "chmod +x start" in info.value.hint
    assert world.builder.builds == [] and world.engine.started == []  # refused first


def test_the_fast_path_is_refused_where_the_container_has_no_agent(world: World) -> None:
    with pytest.raises(NoAgent):
        world.enter("python", "-c", "pass", fast=True)
    assert world.store.runs("proj", 10) == []  # refused before a run is recorded
    warm = world.warm.all()[0]
    warm.agent, warm.agent_user = "/run/agents/x/agent.sock", "1000:100"
    with pytest.raises(NoAgent):  # the agent runs as another uid
        world.enter("true", fast=True, uid=1001, gid=100)
    assert world.store.runs("proj", 10) == []


def test_the_fast_path_runs_the_command_itself_with_the_image_env(world: World) -> None:
    world.enter("true")
    warm = world.warm.all()[0]
    warm.agent, warm.agent_user = "/run/agents/x/agent.sock", "1000:100"
    warm.env = {"PATH": "/opt/venv/bin:/usr/bin", "HOME": "/image-home", "PYTHONHASHSEED": "0"}
    call = {"uid": 1000, "gid": 100, "user_name": "ada", "fast": True, "term": "xterm-kitty"}
    plan = world.enter("python", "-c", "pass", tty=True, **call)
    assert plan.agent_socket == warm.agent and plan.argv == ("python", "-c", "pass")
    assert plan.env == {
        "PATH": "/opt/venv/bin:/usr/bin",
        "PYTHONHASHSEED": "0",
        "TERM": "xterm-kitty",
        "HOME": "/home/ada",  # envd's own win over the image's
        "USER": "ada",
        "ENVD_PROJECT": "proj",
        "ENVD_RUN_ID": plan.run_id,
    }
    piped = world.enter("cat", tty=False, **call)
    assert piped.argv == ("cat",) and "TERM" not in piped.env  # no pid-file wrapper either
    assert [r.command for r in world.store.runs("proj", 10)][:2] == [("cat",), plan.argv]
    assert world.enter("cat").agent_socket == ""  # gRPC's callers still get docker exec


def test_root_and_odd_user_names(world: World) -> None:
    assert world.enter("true", uid=0, gid=0, user_name="whoever").env["HOME"] == "/root"
    assert world.enter("true", uid=5, gid=5, user_name="x'; rm -rf /").env["USER"] == "user5"
    assert safe_user_name("ada.l-1", 7) == "ada.l-1" and safe_user_name("", 7) == "user7"


def test_cwd_inside_the_project_maps_into_workspace(world: World, tmp_path: Path) -> None:
    sub = world.project / "src" / "pkg"
    sub.mkdir(parents=True)
    assert world.enter("true", cwd=str(sub)).workdir == "/workspace/src/pkg"
    assert world.enter("true", cwd=str(tmp_path)).workdir == "/workspace"
    assert workdir_for("/a/b", "/a/b") == "/workspace" and workdir_for("/a/b", "") == "/workspace"


# ---------------------------------------------------------------- GPUs


def test_gpus_attached_when_host_and_engine_have_them(tmp_path: Path) -> None:
    w = make_world(tmp_path, gpus=2, runtimes=("nvidia", "runc"))
    w.enter("true")
    assert w.engine.options[-1]["devices"] == list(gpu_requests(None))
    assert gpu_requests(None)[0]["Count"] == -1
    picked = w.enter("true", gpus="1")  # another selection: another container
    assert picked.started
    assert w.engine.options[-1]["devices"] == [
        {"Driver": "nvidia", "Capabilities": [["gpu"]], "DeviceIDs": ["1"]}
    ]
    assert not w.enter("true", gpus="1").started
    close(w)


def test_no_gpus_without_the_nvidia_runtime(tmp_path: Path) -> None:
    w = make_world(tmp_path, gpus=1, runtimes=("runc",))
    w.enter("true")
    assert w.engine.options[-1]["devices"] == []
    close(w)


def test_gpu_required_on_a_cpu_host_is_refused(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    (w.project / "envd.yaml").write_text(SPEC + "gpu: required\n")
    w.builder.current = "envd/proj:000000000009"
    with pytest.raises(Exception, match="gpu: required") as failed:
        w.enter("true")
    assert failed.value.exit_code == 7  # type: ignore[attr-defined]
    assert w.engine.started == []
    close(w)


def test_bad_gpu_selections_are_usage_errors(world: World, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no NVIDIA GPU"):
        world.enter("true", gpus="0")
    (world.project / "envd.yaml").write_text(SPEC + "gpu: none\n")
    with pytest.raises(UsageError, match="gpu: none"):
        world.enter("true", gpus="all")


# ---------------------------------------------------------------- runs


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_a_run_is_recorded_with_its_provenance(world: World) -> None:
    git(world.project, "init", "-q")
    git(world.project, "add", "envd.yaml")
    git(world.project, "commit", "-qm", "x")
    commit = git(world.project, "rev-parse", "HEAD")
    plan = world.enter("python", "train.py")
    run = world.finish(plan.run_id, 42)
    assert run.finished and run.exit_code == 42 and run.command == ("python", "train.py")
    assert run.environment_hash == "env-of-0001" and run.host_hash == "host-hash"
    assert run.git_commit == commit and not run.git_dirty
    assert run.image == "envd/proj:000000000001" and run.ended_at >= run.started_at
    kind, project, fields = world.events[-1]
    assert (kind, project, fields["exit_code"], fields["run"]) == (
        "run.recorded",
        "proj",
        "42",
        plan.run_id,
    )
    (world.project / "envd.yaml").write_text(SPEC + "# edited\n")
    dirty = world.finish(world.enter("true").run_id, 0)
    assert dirty.git_dirty and dirty.git_commit == commit


def test_a_run_outside_git_has_no_commit(world: World) -> None:
    run = world.finish(world.enter("true").run_id, 0)
    assert run.git_commit == "" and not run.git_dirty and len(run.id) == 12


def test_finish_touches_the_container_and_refuses_unknown_runs(world: World) -> None:
    plan = world.enter("true")
    warm = world.warm.get("proj")
    assert warm is not None
    warm.last_used_at = 0
    world.entering.finish(plan.run_id, 0)
    assert warm.last_used_at > 0
    with pytest.raises(NotFound):
        world.entering.finish("nope", 0)


def test_a_run_is_recorded_even_when_hashes_fail(world: World) -> None:
    def broken(image_id: str) -> tuple[str, str]:
        raise RuntimeError("engine away")

    world.fingerprints.hashes = broken  # type: ignore[method-assign]
    run = world.finish(world.enter("true").run_id, 3)
    assert run.exit_code == 3 and run.environment_hash == "" and run.host_hash == ""


def test_engine_down_is_engine_unavailable(world: World) -> None:
    world.enter("true")

    def down(ref: str) -> None:
        raise EngineUnavailable("the container engine does not answer (gone)")

    world.engine.inspect_container = down  # type: ignore[method-assign, assignment]
    with pytest.raises(EngineUnavailable) as failed:
        world.enter("true")
    assert failed.value.exit_code == 12


def test_a_fast_enter_checks_its_image_beside_the_command(world: World, tmp_path: Path) -> None:
    """With a warm container of the image (which holds it on the engine), the engine is asked
    about the tag only once the command has run; one removed behind envd's back (`docker rmi
    -f` untags it) is forgotten then, and the next enter builds it again."""
    world.enter("true")
    warm = world.warm.get("proj")
    assert warm is not None and world.builder.builds == ["proj"]
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(str(tmp_path / "agent.sock"))
    agent.listen(16)  # answers connections: the agent is alive
    warm.agent, warm.agent_user = str(tmp_path / "agent.sock"), f"{os.getuid()}:{os.getgid()}"
    fast: dict[str, Any] = {"fast": True, "uid": os.getuid(), "gid": os.getgid()}
    tag = warm.image
    try:
        world.engine.image_lookups.clear()
        plan = world.enter("true", **fast)
        assert world.engine.image_lookups == []  # nothing asked before the command starts
        assert plan.check_image == tag
        world.entering.check_image(plan.check_image)  # (once it has run)
        assert world.engine.image_lookups == [tag]

        world.engine.images_removed.add(tag)
        plan = world.enter("true", **fast)
        assert plan.container_id == warm.container_id and world.builder.builds == ["proj"]
        world.entering.check_image(plan.check_image)
        assert not world.store.image(tag)  # forgotten beside the command
        with pytest.raises(NoAgent):  # (the fake engine's new container has no agent)
            world.enter("true", **fast)
        assert world.builder.builds == ["proj", "proj"]
    finally:
        agent.close()


def test_a_plain_enter_still_checks_its_image_first(world: World) -> None:
    """Without an agent (gRPC Enter and `docker exec`), the image is looked up before use."""
    world.enter("true")
    tag = world.builder.current
    world.engine.images_removed.add(str(tag))
    assert world.enter("true").check_image == ""
    assert world.builder.builds == ["proj", "proj"]
