from pathlib import Path

import pytest

from envd.config import Config
from envd.errors import EnvdError, UsageError
from envd.events import EventBus
from envd.services.settings import Settings


def test_round_trip(tmp_path: Path) -> None:
    config = Config().with_value("idle_timeout", "60").with_value("watch", "false")
    settings = Settings(tmp_path / "config.yaml", EventBus())
    settings.set("idle_timeout", "60")
    settings.set("watch", "false")
    assert settings.current == config
    assert Settings(tmp_path / "config.yaml", EventBus()).current == config


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "config.yaml", EventBus())
    settings.set("idle_timeout", "99")
    (tmp_path / "config.yaml").unlink()
    (tmp_path / "config.yaml").mkdir()  # the rename into place fails (as on a full disk)
    with pytest.raises(EnvdError, match="idle_timeout` is unchanged"):
        settings.set("idle_timeout", "1800")
    assert settings.current.idle_timeout == 99
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # no stray temp file


def test_bad_values() -> None:
    with pytest.raises(UsageError):
        Config().with_value("idle", "1")
    with pytest.raises(UsageError):
        Config().with_value("watch", "maybe")
    with pytest.raises(UsageError):
        Config().with_value("idle_timeout", "-1")


def test_the_user_name_is_kept_as_text(tmp_path: Path) -> None:
    settings = Settings(tmp_path / "config.yaml", EventBus())
    settings.set("user", "  Ada   Lovelace ")
    settings.set("watch", "false")
    assert Settings(tmp_path / "config.yaml", EventBus()).current.user == "Ada Lovelace"
    settings.set("user", "yes")  # a name YAML would read as true stays a name
    assert Settings(tmp_path / "config.yaml", EventBus()).current.user == "yes"
    with pytest.raises(UsageError, match="printable"):
        Config().with_value("user", "x" * 101)
    with pytest.raises(UsageError):
        Config().with_value("user", "a\x1bb")
