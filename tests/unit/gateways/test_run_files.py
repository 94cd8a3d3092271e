"""Files a run reads beside its command (params, metrics, envd.lock) are project files that code
in the container can write: a FIFO, a device, a link out or a huge file is skipped, never a
hang or an unbounded read."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from envd.gateways.projectfiles import read_run_file


def test_a_regular_file_inside_the_project_is_read(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("lr: 0.1\n")
    assert read_run_file(tmp_path, "params.yaml", 1024) == b"lr: 0.1\n"


def test_a_fifo_device_link_out_or_oversized_file_is_skipped_at_once(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    os.mkfifo(project / "fifo.yaml")
    os.symlink("/dev/zero", project / "zero.yaml")
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", project / "out.yaml")
    (project / "big.json").write_bytes(b"x" * 2048)
    results: dict[str, bytes | None] = {}

    def read_all() -> None:
        for name in ("fifo.yaml", "zero.yaml", "out.yaml", "big.json", "missing.json"):
            results[name] = read_run_file(project, name, 1024)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "a run file read blocked"
    assert results == dict.fromkeys(
        ("fifo.yaml", "zero.yaml", "out.yaml", "big.json", "missing.json")
    )


def test_a_file_the_user_names_is_read_bounded_and_never_blocks(tmp_path: Path) -> None:
    import pytest

    from envd.errors import NotFound, UsageError
    from envd.gateways.projectfiles import read_user_file

    (tmp_path / "fp.json").write_text("{}")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * 100)
    assert read_user_file(tmp_path / "fp.json", 10, "fingerprint") == b"{}"
    with pytest.raises(NotFound):
        read_user_file(tmp_path / "missing", 10, "fingerprint")
    for path in (tmp_path / "fifo", "/dev/zero", tmp_path, tmp_path / "big"):
        with pytest.raises(UsageError):
            read_user_file(path, 10, "fingerprint")
