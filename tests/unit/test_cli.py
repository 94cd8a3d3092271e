"""The CLI's shape: lean start-up, exit codes, no tracebacks for user errors."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cli.app import COMMANDS, cli
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
