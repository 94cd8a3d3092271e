"""The in-container probe runs on a plain interpreter and reports the expected shape."""

from __future__ import annotations

import json
import subprocess
import sys

from envd.services.fingerprints import PROBE


def test_probe_shape() -> None:
    out = subprocess.run(
        [sys.executable, str(PROBE), "HOME"], capture_output=True, text=True, check=True
    ).stdout
    data = json.loads(out)
    assert set(data) == {
        "os_release",
        "glibc",
        "arch",
        "debian_packages",
        "python",
        "python_packages",
        "cuda_libraries",
        "env",
    }
    names = [p[0] for p in data["python_packages"]]
    assert names == sorted(names) and "click" in names
    assert all(len(p[2]) in (0, 64) for p in data["python_packages"])
    assert list(data["env"]) == ["HOME"]
