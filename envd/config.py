"""The daemon's settings: $ENVD_HOME/config.yaml, also set with `envctl config KEY VALUE`."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from envd.errors import EnvdError, UsageError

_DESCRIPTIONS = {
    "idle_timeout": "seconds a warm container may sit unused before it is stopped (0: never)",
    "watch": "watch registered projects' envd.yaml, envd.lock and requirements files",
    "rebuild_on_change": "rebuild in the background when a watched project changes",
    "mlflow_tracking_uri": "an MLflow server (http://...) finished runs are logged to; empty: off",
    "cache": "a registry repository (REGISTRY/REPO) builds share step images through; empty: off",
    "user": "the name `share run` records as who shared (empty: git's user.name)",
}
MAX_USER = 100
PROJECT_CACHE = "cache for project {name}: overrides `cache` (`off`: no cache)"
# REGISTRY/REPO: a host (with a dot or a port, or localhost), then a lowercase repository path
# (OCI distribution's grammar), and no tag or digest: the cache chooses the tags.
_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?"
_HOST_PORT = r"[A-Za-z0-9-]+:[0-9]{1,5}"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
CACHE_REFERENCE = re.compile(rf"(?:{_HOST}|{_HOST_PORT})/{_PATH}")
_PROJECT_KEY = re.compile(r"cache\[([^\]\s]+)\]")
MAX_CACHE_REFERENCE = 200  # leaves room for `:` and a 64-character tag in a reference


@dataclass(frozen=True)
class Config:
    idle_timeout: float = 1800.0
    watch: bool = True
    rebuild_on_change: bool = True
    mlflow_tracking_uri: str = ""
    cache: str = ""
    user: str = ""
    # per-project overrides of `cache`, set as `cache[NAME]` ("off": none for that project)
    project_caches: tuple[tuple[str, str], ...] = ()

    def entries(self) -> list[tuple[str, str, str]]:
        out = [
            (f.name, _format(getattr(self, f.name)), _DESCRIPTIONS[f.name])
            for f in fields(self)
            if f.name in _DESCRIPTIONS
        ]
        for name, value in self.project_caches:
            out.append((f"cache[{name}]", value, PROJECT_CACHE.format(name=name)))
        return out

    def cache_for(self, project: str) -> str:
        """The build cache a project's builds use ("" for none)."""
        override = dict(self.project_caches).get(project)
        if override is None:
            return self.cache
        return "" if override == "off" else override

    def with_value(self, key: str, text: str) -> Config:
        if (match := _PROJECT_KEY.fullmatch(key)) is not None:
            name, reference = match.group(1), text.strip()
            if reference and reference != "off":
                reference = check_cache_reference(key, reference)
            overrides = dict(self.project_caches)
            if reference:
                overrides[name] = reference
            else:
                overrides.pop(name, None)
            return replace(self, project_caches=tuple(sorted(overrides.items())))
        kinds = {f.name: f.type for f in fields(self) if f.name in _DESCRIPTIONS}
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
        elif key == "cache":
            value = check_cache_reference(key, text.strip()) if text.strip() else ""
        elif key == "user":
            value = check_user(text)
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


def check_cache_reference(key: str, text: str) -> str:
    """REGISTRY/REPO as given (UsageError naming what is wrong)."""
    example = "e.g. registry.example.com/team/envd-cache or 127.0.0.1:5000/team/cache"
    if "://" in text:
        raise UsageError(
            f"`{key}` takes REGISTRY/REPO without a scheme, not {text!r}",
            hint=f"{example} (registries on 127.0.0.0/8 are reached in plain http)",
        )
    if "@" in text or (":" in text.rsplit("/", 1)[-1] and "/" in text):
        raise UsageError(
            f"`{key}` takes a repository without a tag or digest, not {text!r}",
            hint=f"the cache names its tags by step key; {example}",
        )
    if len(text) > MAX_CACHE_REFERENCE or CACHE_REFERENCE.fullmatch(text) is None:
        raise UsageError(
            f"`{key}` takes REGISTRY/REPO (a registry host, then a lowercase repository "
            f"path), not {text!r}",
            hint=example,
        )
    return text


def check_user(text: str) -> str:
    """A name to record as who shared a run: one line of printable text, bounded."""
    name = " ".join(text.split())
    if len(name) > MAX_USER or not name.isprintable():
        raise UsageError(
            f"`user` takes a name of at most {MAX_USER} printable characters, not {text!r}"
        )
    return name


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
    # (registry references stay text: `off` would read back as false)
    data = {
        k: v if k.startswith("cache") or k == "user" else yaml.safe_load(v)
        for k, v, _ in config.entries()
    }
    return yaml.safe_dump(data, sort_keys=True)
