"""The daemon's settings: $ENVD_HOME/config.yaml, also set with `envctl config KEY VALUE`."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from envd.errors import EnvdError, UsageError

_DESCRIPTIONS = {
    "idle_timeout": "seconds a warm container may sit unused before it is stopped (0: never)",
    "watch": "watch registered projects' envd.yaml, envd.lock and requirements files",
    "rebuild_on_change": "rebuild in the background when a watched project changes",
    "mlflow_tracking_uri": "an MLflow server (http://...) finished runs are logged to; empty: off",
}


@dataclass(frozen=True)
class Config:
    idle_timeout: float = 1800.0
    watch: bool = True
    rebuild_on_change: bool = True
    mlflow_tracking_uri: str = ""

    def entries(self) -> list[tuple[str, str, str]]:
        return [
            (f.name, _format(getattr(self, f.name)), _DESCRIPTIONS[f.name]) for f in fields(self)
        ]

    def with_value(self, key: str, text: str) -> Config:
        kinds = {f.name: f.type for f in fields(self)}
        if key not in kinds:
            raise UsageError(
                f"unknown setting `{key}`", hint=f"settings are: {', '.join(sorted(kinds))}"
            )
        current = getattr(self, key)
        value: Any
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise UsageError(f"`{key}` takes true or false, not {text!r}")
            value = text.lower() in ("true", "yes", "1", "on")
        elif isinstance(current, str):
            value = text.strip()
            if value and not value.startswith(("http://", "https://")):
                raise UsageError(f"`{key}` takes an http:// or https:// URL, not {text!r}")
        else:
            try:
                value = float(text)
            except ValueError:
                raise UsageError(f"`{key}` takes a number of seconds, not {text!r}") from None
            if value < 0:
                raise UsageError(f"`{key}` cannot be negative")
        return replace(self, **{key: value})


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_config(text: str, source: str) -> Config:
    """config.yaml's text as settings (unknown keys and bad values are refused)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise EnvdError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvdError(f"{source}: expected a mapping of settings")
    config = Config()
    for key, value in data.items():
        config = config.with_value(str(key), _format(value))
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump({k: yaml.safe_load(v) for k, v, _ in config.entries()}, sort_keys=True)
