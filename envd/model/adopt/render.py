"""The envd.yaml text `adopt` writes: the template merged with what was found, as block YAML."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from envd.model.pythons import AUTO

_AUTO_COMMENT = "# no Python found: `envctl lock` picks the newest envd builds that fits the pins"


def _merge(template: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
    """Template keys overridden by the project's; lists merged without duplicates."""
    out: dict[str, Any] = json.loads(json.dumps(dict(template)))
    if "base" in project and "python" not in project:
        out.pop("python", None)
    for key, value in project.items():
        old = out.get(key)
        if isinstance(value, list):
            if isinstance(old, str):
                old = [old]
            merged = list(old) if isinstance(old, list) else []
            merged.extend(v for v in value if v not in merged)
            out[key] = merged
        elif isinstance(value, dict) and isinstance(old, dict) and key != "base":
            out[key] = {**old, **value}
        else:
            out[key] = value
    for key in ("requirements", "constraints"):
        if isinstance(out.get(key), list) and len(out[key]) == 1:
            out[key] = out[key][0]
    return out


def _plain(text: str) -> bool:
    if not text or text != text.strip() or "\n" in text:
        return False
    try:
        return bool(
            yaml.safe_load(f"k: {text}") == {"k": text} and yaml.safe_load(f"- {text}") == [text]
        )
    except yaml.YAMLError:
        return False


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return text if _plain(text) else json.dumps(text)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list):
                lines.append(f"{pad}{_scalar(key)}:")
                lines.extend(_block(item, indent + 2))
            else:
                lines.append(f"{pad}{_scalar(key)}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, dict | list):
                inner = _block(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [f"{pad}{_scalar(value)}"]


def render(document: Mapping[str, Any], files: list[str] | tuple[str, ...] = ()) -> str:
    """envd.yaml text for the document, keys in the order given, with a header comment."""
    head = "# Written by `envctl init`" + (f" from {', '.join(files)}." if files else ".")
    lines = textwrap.wrap(
        head, width=98, subsequent_indent="#   ", break_on_hyphens=False, break_long_words=False
    )
    for key, value in document.items():
        if isinstance(value, dict | list):
            if not value:
                continue
            lines.append(f"{key}:")
            lines.extend(_block(value, 2))
        elif key == "python" and value == AUTO:
            lines.append(f"{key}: {AUTO}  {_AUTO_COMMENT}")
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"
