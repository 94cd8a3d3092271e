"""The CLI's shape: lean start-up, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from cli.app import COMMANDS, cli
from cli.catalog import help_text
from cli.everyday import plain_call
from tests.conftest import ROOT


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def test_help_imports_neither_grpc_nor_docker() -> None:
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('grpc', 'docker', 'google.protobuf', 'yaml') if m in sys.modules]\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr


def test_enter_hot_path_with_the_client_imports_no_click() -> None:
    code = (
        "import sys\n"
        "import cli.entering\n"
        "assert 'grpc' not in sys.modules, 'grpc before the call'\n"
        "import cli.client\n"
        "heavy = ('click', 'docker', 'yaml', 'cli.app', 'cli.output')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("envctl ")


def test_usage_error_exits_2() -> None:
    proc = run("no-such-command")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    proc = run("ls", "--bogus-flag")
    assert proc.returncode == 2


def test_daemon_unreachable_has_its_own_exit_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    env = dict(os.environ, ENVD_HOME=str(tmp_path), ENVD_SOCKET=str(tmp_path / "nope.sock"))
    proc = run("daemon", "logs", env=env)  # reads the log only: no daemon needed
    assert proc.returncode == 0
    code = (
        "from cli.context import AppContext\n"
        "from cli.errors import run_cli\n"
        "import click, sys\n"
        "@click.command()\n"
        "def c():\n    AppContext().client(start=False)\n"
        "sys.exit(run_cli(c, []))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == 11, proc.stderr
    assert "not running" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bug_exits_3_with_crash_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    env = dict(os.environ, ENVD_HOME=str(tmp_path))
    code = (
        "from cli.errors import run_cli\n"
        "import click, sys\n"
        "@click.command()\n"
        "def c():\n    raise ZeroDivisionError('boom')\n"
        "sys.exit(run_cli(c, []))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == 3
    assert "internal error" in proc.stderr
    assert "Traceback" not in proc.stderr
    log = (tmp_path / "logs" / "envctl-crash.log").read_text()
    assert "ZeroDivisionError" in log
    assert "envctl 0." in log


def test_help_is_clicks_help_without_click() -> None:
    code = (
        "import sys\n"
        "from cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        "print('CLICK', 'click' in sys.modules)\n"
    )
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert out.stdout.endswith("CLICK False\n"), out.stdout + out.stderr
    clicks = CliRunner().invoke(cli, ["--help"], prog_name="envctl", terminal_width=80)
    assert out.stdout.removesuffix("CLICK False\n") == clicks.output


def test_help_on_a_narrow_terminal_is_left_to_click() -> None:
    assert help_text(width=40) is None
    assert help_text(width=200) == help_text(width=80)


FAKE_CLIENT = (
    "import sys\n"
    "from cli.context import AppContext\n"
    "from envd.errors import NotFound\n"
    "from envd.v1 import envd_pb2 as pb\n"
    "class Fake:\n"
    "    def list_containers(self, request):\n"
    "        c = pb.WarmContainer(project='p', container_id='c' * 64, image='envd/p:1',\n"
    "                             status='running')\n"
    "        return pb.ListContainersReply(containers=[c])\n"
    "    def project_status(self, request):\n"
    "        raise NotFound(f'no project `{request.ref}` is registered', hint='`envctl ls`')\n"
    "AppContext.client = lambda self, start=True: Fake()\n"
    "from cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n"
    "    print('EXIT', exc.code, 'CLICK', 'click' in sys.modules)\n"
)


def test_ps_prints_its_table_without_click() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FAKE_CLIENT, "ps"], capture_output=True, text=True, cwd=ROOT
    )
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["PROJECT", "CONTAINER", "IMAGE", "SINCE", "LAST", "USED", "STATUS"]
    assert lines[1].split()[:3] == ["p", "c" * 12, "envd/p:1"] and "running" in lines[1]
    assert lines[-1] == "EXIT 0 CLICK False", out.stdout + out.stderr


def test_an_everyday_error_keeps_its_message_hint_and_exit_code() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FAKE_CLIENT, "status", "nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.stdout.splitlines()[-1] == "EXIT 4 CLICK False", out.stdout + out.stderr
    assert out.stderr == "envctl: error: no project `nope` is registered\n  hint: `envctl ls`\n"


def test_only_plain_everyday_calls_skip_click() -> None:
    assert plain_call(["ps"]) == ("ps", [], False)
    assert plain_call(["--json", "ls"]) == ("ls", [], True)
    assert plain_call(["status", "p"]) == ("status", ["p"], False)
    assert plain_call(["status"]) == ("status", [], False)
    for args in (["ps", "--help"], ["ls", "x"], ["status", "a", "b"], ["images", "-h"], []):
        assert plain_call(args) is None, args  # click answers these (usage, help)
    assert run("ps", "--bogus").returncode == 2
