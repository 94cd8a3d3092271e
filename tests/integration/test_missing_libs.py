"""A wheel that links a shared library the image lacks fails the build after the packages
step, naming the library and the Debian package to add; with that package it builds."""

from __future__ import annotations

import pytest

from tests.conftest import Envctl

pytestmark = pytest.mark.integration

# lightgbm's manylinux wheel (3.5 MB) links libgomp.so.1 and does not vendor it; a bare
# bookworm base (mmdebstrap minbase) has no libgomp1.
SPEC = """\
version: 1
base: {debian: bookworm}
python: "3.11"
packages: ["lightgbm==4.6.0"]
"""


def test_missing_shared_library_is_named_then_fixed_with_system(shared: Envctl) -> None:
    path = shared.cwd / "gbm"
    path.mkdir()
    (path / "envd.yaml").write_text(SPEC)
    shared.ok("lock", str(path))
    proc = shared("build", str(path))
    assert proc.returncode == 6, proc.stderr
    assert "lightgbm needs libgomp.so.1: add `system: [libgomp1]` to envd.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr

    (path / "envd.yaml").write_text(SPEC + "system: [libgomp1]\n")
    shared.ok("lock", str(path))
    shared.ok("build", str(path))
    out = shared.ok(
        "enter", str(path), "--", "python", "-c", "import lightgbm; print(lightgbm.__version__)"
    )
    assert out.strip().endswith("4.6.0")
