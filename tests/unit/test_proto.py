"""The checked-in stubs match the proto."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_generated_stubs_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_messages_carry_no_json_strings() -> None:
    text = (ROOT / "proto/envd/v1/envd.proto").read_text()
    assert "json" not in text.lower().replace("no json blobs", "")
