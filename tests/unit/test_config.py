from pathlib import Path

import pytest

from envd.config import Config, load_config, save_config
from envd.errors import UsageError


def test_round_trip(tmp_path: Path) -> None:
    config = Config().with_value("idle_timeout", "60").with_value("watch", "false")
    save_config(tmp_path / "config.yaml", config)
    assert load_config(tmp_path / "config.yaml") == config


def test_bad_values() -> None:
    with pytest.raises(UsageError):
        Config().with_value("idle", "1")
    with pytest.raises(UsageError):
        Config().with_value("watch", "maybe")
    with pytest.raises(UsageError):
        Config().with_value("idle_timeout", "-1")
