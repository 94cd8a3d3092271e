"""repo2docker's `start` (every command runs through it), `env: {PATH: ...}` and a setup
command that names a project file it does not list, through a real daemon and engine."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

START_SPEC = """\
version: 1
name: startproj
base: {debian: bookworm}
python: "3.11"
start: binder/start
"""

START = """\
#!/bin/bash
export STARTED="by start"
echo "start saw: $*" >&2
exec "$@"
"""

PATH_SPEC = """\
version: 1
name: pathproj
base: {debian: bookworm}
python: "3.11"
env: {PATH: "/opt/tools/bin:/opt/venv/bin:/usr/bin:/bin"}
setup:
  - "mkdir -p /opt/tools/bin"
  - "printf '#!/bin/sh\\necho hello from tools\\n' > /opt/tools/bin/hello"
  - "chmod +x /opt/tools/bin/hello"
"""


def test_start_runs_every_command_on_both_enter_paths_and_is_live(shared: Envctl) -> None:
    path = shared.cwd / "startproj"
    (path / "binder").mkdir(parents=True)
    (path / "envd.yaml").write_text(START_SPEC)
    start = path / "binder" / "start"
    start.write_text(START)
    start.chmod(0o755)
    shared.ok("build", str(path))
    check = ["enter", str(path), "--", "sh", "-c", 'echo "$STARTED"']
    fast = shared(*check)
    assert fast.returncode == 0, fast.stderr
    assert fast.stdout == "by start\n" and "start saw: sh -c" in fast.stderr
    grpc = dataclasses.replace(shared, env={**shared.env, "ENVD_ENTER_FAST": "0"})
    slow = grpc(*check)
    assert slow.returncode == 0, slow.stderr
    assert slow.stdout == "by start\n"
    assert shared.ok("enter", str(path), input='echo "shell: $STARTED"\n') == "shell: by start\n"
    # exit codes pass through start's exec
    assert shared("enter", str(path), "--", "sh", "-c", "exit 7").returncode == 7
    # the script is read from the project on every command: an edit needs no build
    start.write_text(START.replace('"by start"', '"edited"'))
    assert shared.ok("enter", str(path), "--", "sh", "-c", 'echo "$STARTED"') == "edited\n"
    start.chmod(0o644)
    refused = shared("enter", str(path), "--", "true")
    assert refused.returncode != 0 and "chmod +x binder/start" in refused.stderr


def test_path_in_env_is_the_commands_path(shared: Envctl) -> None:
    path = shared.cwd / "pathproj"
    path.mkdir()
    (path / "envd.yaml").write_text(PATH_SPEC)
    shared.ok("build", str(path))
    out = shared.ok("enter", str(path), "--", "sh", "-c", 'echo "$PATH"; hello; command -v python')
    assert (
        out
        == "/opt/tools/bin:/opt/venv/bin:/usr/bin:/bin\nhello from tools\n/opt/venv/bin/python\n"
    )
    (path / "envd.yaml").write_text(PATH_SPEC.replace("/opt/venv/bin:/usr/bin:/bin", "$PATH"))
    refused = shared("lock", str(path))
    assert refused.returncode != 0
    assert "does not expand variables" in refused.stderr
    assert "PATH: /opt/tools/bin:/opt/venv/bin:/usr/local/sbin" in refused.stderr


def test_a_setup_command_naming_an_unlisted_file_is_refused_before_build(shared: Envctl) -> None:
    path = shared.cwd / "unlisted"
    path.mkdir()
    spec = "version: 1\nbase: {debian: bookworm}\npython: '3.11'\nsetup: [bash postBuild]\n"
    (path / "envd.yaml").write_text(spec)
    (path / "postBuild").write_text("echo built > /opt/built\n")
    refused = shared("build", str(path))
    assert refused.returncode != 0
    assert "names the project file `postBuild`" in refused.stderr
    assert "`- run: bash postBuild` with `files: [postBuild]`" in refused.stderr
    (path / "envd.yaml").write_text(
        spec.replace("[bash postBuild]", "[{run: bash postBuild, files: [postBuild]}]")
    )
    shared.ok("build", str(path))
    assert shared.ok("enter", str(path), "--", "cat", "/opt/built") == "built\n"
