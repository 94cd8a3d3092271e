"""`envctl export dockerfile`: the same plan, as plain Dockerfile syntax for the legacy builder."""

from __future__ import annotations

import json

from envd.model.dockerfile import quote, render
from envd.model.plan import make_plan
from tests.unit.model.test_plan import NUMPY, SIX, lock


def instructions(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_renders_every_step_in_order() -> None:
    the_lock = lock((NUMPY, SIX), setup=("echo hi",))
    lines = instructions(render(make_plan("p", the_lock), the_lock))
    verbs = [line.split()[0] for line in lines]
    assert verbs == ["FROM", "RUN", "COPY", "RUN", "ENV", "ENV", "ENV", "ENV", "RUN"] + [
        "LABEL"
    ] * 4 + ["WORKDIR", "CMD"]
    assert lines[0] == "FROM envd/base-debian:abc"
    assert lines[1] == 'RUN ["python3", "-m", "venv", "/opt/venv"]'
    assert lines[2] == "COPY requirements.lock.txt /tmp/requirements.lock.txt"
    pip = json.loads(lines[3].removeprefix("RUN "))
    assert pip[:2] == ["sh", "-c"]
    assert pip[2].startswith("/opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps")
    assert lines[-2:] == ["WORKDIR /workspace", 'CMD ["sleep", "infinity"]']


def test_setup_commands_reach_sh_byte_for_byte() -> None:
    command = """echo "$HOME it's" > /tmp/x && printf 'a\\nb'"""
    the_lock = lock((NUMPY,), setup=(command,))
    lines = instructions(render(make_plan("p", the_lock), the_lock))
    setup = [json.loads(line[4:]) for line in lines if line.startswith('RUN ["sh", "-c", "echo')]
    assert setup == [["sh", "-c", command]]


def test_env_and_labels_are_quoted_for_the_dockerfile_parser() -> None:
    the_lock = lock((NUMPY,), env=(("GREETING", 'say "hi" to $USER\\n'),))
    text = render(make_plan("p", the_lock), the_lock)
    assert 'ENV GREETING="say \\"hi\\" to \\$USER\\\\n"' in text
    assert 'ENV PATH="/opt/venv/bin:' in text and 'ENV VIRTUAL_ENV="/opt/venv"' in text
    assert 'LABEL "envd.project"="p"' in text
    assert 'LABEL "envd.lock-hash"="sha256:' in text


def test_quote() -> None:
    assert quote("plain") == '"plain"'
    assert quote('a"b') == '"a\\"b"'
    assert quote("$x") == '"\\$x"'


def test_extra_indexes_and_image_base_with_system_packages() -> None:
    from envd.model.lockfile import DebianPackage

    debs = (DebianPackage("git", "1:2.39.5-0+deb12u1", "amd64"),)
    the_lock = lock((NUMPY,), image=True, system=debs, indexes=("https://example.org/simple",))
    lines = instructions(render(make_plan("p", the_lock), the_lock))
    assert lines[0] == "FROM python:3.11-slim"
    system = json.loads(lines[1][4:])
    assert system[:2] == ["sh", "-c"] and "git=1:2.39.5-0+deb12u1" in system[2]
    assert "apt-get clean" in system[2] and "Dir::Cache" not in system[2]
    assert any("--extra-index-url https://example.org/simple" in line for line in lines)


def test_no_packages_no_copy() -> None:
    the_lock = lock(())
    text = render(make_plan("p", the_lock), the_lock)
    assert "COPY" not in text and "pip" not in text


def test_debian_base_is_explained() -> None:
    the_lock = lock((NUMPY,))
    text = render(make_plan("p", the_lock), the_lock)
    assert "# The base is Debian bookworm made by mmdebstrap" in text


def test_a_registry_base_is_pinned_by_digest() -> None:
    from dataclasses import replace

    the_lock = lock((NUMPY,), image=True)
    pinned = replace(the_lock.base, digest="python@sha256:" + "c" * 64)
    the_lock = replace(the_lock, base=pinned)
    lines = instructions(render(make_plan("p", the_lock), the_lock))
    assert lines[0] == "FROM python@sha256:" + "c" * 64


def test_envd_commits_env_and_labels_with_the_same_quoting() -> None:
    """`docker commit --change` parses like a Dockerfile: `$HOME` in a value must stay literal."""
    from envd.gateways.engine import CommitSpec

    commit = CommitSpec("envd/cache", "k", env={"A": "$HOME"}, cmd=("sleep", "infinity"))
    assert commit.instructions({"envd.project": "p$x"}) == [
        'LABEL "envd.project"="p\\$x"',
        'ENV A="\\$HOME"',
        'CMD ["sleep", "infinity"]',
    ]


def test_setup_files_are_copied_and_the_command_runs_where_they_are() -> None:
    from dataclasses import replace

    from envd.model.plan import STEP_FILES, StepFile

    base = lock((NUMPY,), setup=("bash postBuild",))
    the_lock = replace(base, inputs=replace(base.inputs, setup_files=(("postBuild",),)))
    files = {"postBuild": (StepFile("postBuild", "0" * 64, True),)}
    lines = instructions(render(make_plan("p", the_lock, setup_files=files), the_lock))
    copy = lines.index(f'COPY ["postBuild", "{STEP_FILES}/postBuild"]')
    argv = json.loads(lines[copy + 1].removeprefix("RUN "))
    assert argv[-3:] == ["sh", "-c", "bash postBuild"] and f"cd {STEP_FILES}" in argv[2]


def test_the_project_step_writes_the_same_files() -> None:
    import base64
    from dataclasses import replace

    from envd.model.plan import ProjectPackage, StepFile

    base = lock((NUMPY,))
    the_lock = replace(base, inputs=replace(base.inputs, project="install"))
    code = StepFile("tiny/__init__.py", "3" * 64)
    package = ProjectPackage("tiny", "0.1", source="src", files=(code,))
    plan = make_plan("p", the_lock, package=package)
    lines = instructions(render(plan, the_lock))
    site = "/opt/venv/lib/python3.11/site-packages"
    assert f'COPY ["src/tiny/__init__.py", "{site}/tiny/__init__.py"]' in lines
    argv = json.loads(next(line for line in lines if "base64" in line).removeprefix("RUN "))
    assert argv[:2] == ["/opt/venv/bin/python", "-c"]
    compile(argv[2], "RUN", "exec")
    written = json.loads(argv[2].split("json.loads(", 1)[1].split(").items()", 1)[0])
    generated = dict(plan.generated)
    step = next(s for s in plan.steps if s.name == "project")
    expected = {"/" + f.path: f.sha256 for f in step.files if f.sha256 in generated}
    assert sorted(json.loads(written)) == sorted(expected)
    for path, (data, _) in json.loads(written).items():
        assert generated[expected[path]] == base64.b64decode(data)
