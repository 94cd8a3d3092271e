"""On a platform other than Linux, envctl and envd say so clearly instead of crashing.

The platform is faked in a child interpreter: sys.platform is set to another OS's value and
the Linux-only names the code could reach for (SO_PEERCRED, pidfd_open, O_PATH, ...) are
removed before anything of envd's is imported.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envd.errors import EXIT_HOST, unsupported_platform

ROOT = Path(__file__).resolve().parents[2]
FAKE = """
import os, socket, sys
sys.platform = {platform!r}
for module, names in (
    (socket, ("SO_PEERCRED", "SO_PASSCRED")),
    (os, ("pidfd_open", "O_PATH", "sched_getaffinity", "memfd_create", "O_TMPFILE", "splice")),
):
    for name in names:
        if hasattr(module, name):
            delattr(module, name)
"""


def _run(platform: str, body: str) -> subprocess.CompletedProcess[str]:
    code = FAKE.format(platform=platform) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("platform", "shown"), [("darwin", "macOS"), ("win32", "Windows")])
def test_envctl_refuses_with_the_reason_and_the_host_exit_code(platform: str, shown: str) -> None:
    proc = _run(platform, "from cli.main import main\nmain(['ps'])\n")
    assert proc.returncode == EXIT_HOST, proc.stderr
    assert f"envctl: error: envd does not support {shown} yet" in proc.stderr
    assert "hint: run envd inside the Linux machine" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_daemon_refuses_before_it_touches_anything(tmp_path: Path) -> None:
    body = f"""
    import os
    os.environ["ENVD_HOME"] = {str(tmp_path / "home")!r}
    from envd.daemon.serve import main
    raise SystemExit(main(["serve"]))
    """
    proc = _run("darwin", body)
    assert proc.returncode == EXIT_HOST, proc.stderr
    assert "envd: error: envd does not support macOS yet" in proc.stderr
    assert not (tmp_path / "home").exists()  # no state, no socket, no log


def test_every_entry_module_imports_on_a_faked_platform() -> None:
    body = """
    import importlib
    for name in ("cli.main", "cli.app", "cli.entering", "cli.everyday", "envd.daemon.serve"):
        importlib.import_module(name)
    print("ok")
    """
    proc = _run("darwin", body)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_linux_is_supported() -> None:
    assert unsupported_platform("linux") is None
    refused = unsupported_platform("freebsd14")
    assert refused is not None and "freebsd14" in str(refused)
