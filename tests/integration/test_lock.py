"""envctl lock on the real engine and the real index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Envctl, copy_template

pytestmark = pytest.mark.integration


def lock_data(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((path / "envd.lock").read_text())


def test_sklearn_lock_pins_everything_and_is_stable(shared: Envctl) -> None:
    path = copy_template("sklearn", shared.cwd / "sk")
    out = shared.ok("lock", str(path))
    assert "wrote" in out
    data = lock_data(path)
    names = {p["name"] for p in data["python"]}
    assert {"scikit-learn", "pandas", "numpy", "scipy"} <= names
    for package in data["python"]:
        assert package["version"] and package["hashes"]
        assert all(h.startswith("sha256:") for h in package["hashes"])
    assert data["base"]["kind"] == "debian" and data["base"]["packages"]
    assert all(p["version"] for p in data["base"]["packages"])
    assert data["target"]["python_version"].startswith("3.11.")
    assert data["target"]["platform"] == "manylinux_2_36_x86_64"
    before = (path / "envd.lock").read_bytes()
    assert "unchanged" in shared.ok("lock", str(path))
    assert (path / "envd.lock").read_bytes() == before
    assert shared("lock", "--check", str(path)).returncode == 0


def test_check_names_each_kind_of_drift(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "drift")  # cold: locked from scratch
    shared.ok("lock", str(path))
    spec = (path / "envd.yaml").read_text()
    cases = {
        "package added: six": spec.replace("  - pyyaml", "  - pyyaml\n  - six"),
        "package removed: pyyaml": spec.replace("  - pyyaml\n", ""),
        "constraint changed": spec.replace("numpy>=1.26", "numpy>=1.25"),
        "python changed": spec.replace('python: "3.11"', 'python: "3.11.2"'),
        "base changed": spec.replace("debian: bookworm", "debian: trixie"),
    }
    for reason, text in cases.items():
        (path / "envd.yaml").write_text(text)
        proc = shared("lock", "--check", str(path))
        assert proc.returncode == 5, (reason, proc.stderr)
        assert reason in proc.stderr, proc.stderr
    (path / "envd.yaml").write_text(spec)
    assert shared("lock", "--check", str(path)).returncode == 0


def test_conflict_is_named_and_old_lock_kept(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "conflict")  # cold: locked from scratch
    shared.ok("lock", str(path))
    before = (path / "envd.lock").read_bytes()
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec.replace("  - pyyaml", "  - pyyaml\n  - numpy<1.20"))
    proc = shared("lock", str(path))
    assert proc.returncode == 1
    assert "numpy" in proc.stderr and "Traceback" not in proc.stderr
    assert (path / "envd.lock").read_bytes() == before
    assert not list(path.glob("*.tmp*")) and not list(path.glob(".envd.lock*"))


def test_pytorch_cuda_locks_on_a_cpu_host(shared: Envctl) -> None:
    path = copy_template("pytorch-cuda", shared.cwd / "cuda")
    # No background build after the lock: it would install torch and CUDA (gigabytes).
    (path / "envd.yaml").write_text((path / "envd.yaml").read_text() + "watch: false\n")
    shared.ok("lock", str(path))
    data = lock_data(path)
    assert data["target"]["accelerator"] == "cu124"
    assert data["target"]["min_driver"] == "550.54.14"
    torch = next(p for p in data["python"] if p["name"] == "torch")
    assert torch["version"].startswith(("2.5.", "2.6."))


def test_unknown_debian_package_is_named(shared: Envctl) -> None:
    path = copy_template("default", shared.cwd / "nodeb")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "system: [no-such-package-xyz]\n")
    proc = shared("lock", str(path))
    assert proc.returncode == 1
    assert "no-such-package-xyz" in proc.stderr


def test_a_lock_made_again_is_the_same_and_a_changed_requirements_file_resolves_again(
    shared: Envctl,
) -> None:
    path = copy_template("default", shared.cwd / "again")  # cold: edited before its lock
    (path / "requirements.txt").write_text("six\n")
    spec = (path / "envd.yaml").read_text()
    (path / "envd.yaml").write_text(spec + "requirements: requirements.txt\n")
    shared.ok("lock", str(path))
    first = (path / "envd.lock").read_bytes()
    assert "six" in {p["name"] for p in lock_data(path)["python"]}
    (path / "envd.lock").unlink()
    shared.ok("lock", str(path))
    assert (path / "envd.lock").read_bytes() == first
    (path / "requirements.txt").write_text("six==1.16.0\n")
    (path / "envd.lock").unlink()
    shared.ok("lock", str(path))
    assert {p["name"]: p["version"] for p in lock_data(path)["python"]}["six"] == "1.16.0"
    (path / "requirements.txt").write_text("six==1.16.0\npackaging==24.1\n")
    shared.ok("lock", str(path))  # (the lock is stale: locked again, from the previous pins)
    versions = {p["name"]: p["version"] for p in lock_data(path)["python"]}
    assert versions["six"] == "1.16.0" and versions["packaging"] == "24.1"
