"""devcontainer.json (JSONC)."""

from __future__ import annotations

import re
import shlex

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    SetupStep,
    _Acc,
    _checked,
    _json,
    shown,
)


@_checked
def parse_devcontainer(
    text: str, path: str = ".devcontainer/devcontainer.json", *, root: str = ""
) -> Parsed:
    """devcontainer.json (JSONC): image, containerEnv, forwardPorts, postCreateCommand."""
    data = _json(text, path, root, jsonc=True)
    acc = _Acc(source=path, format="devcontainer")
    if isinstance(data.get("image"), str):
        acc.image = data["image"]
        tag = re.search(r"python:(?:\d+-)?(3\.\d+)", data["image"])
        if tag:
            acc.python = tag.group(1)
    if "build" in data or "dockerFile" in data:
        acc.warnings.append(f"{shown(root, path)}: its Dockerfile build is not taken over")
    for key, value in (data.get("containerEnv") or {}).items():
        acc.env.append((str(key), str(value)))
    for port in data.get("forwardPorts") or []:
        if isinstance(port, int):
            acc.ports.append(port)
        else:
            acc.warnings.append(f"{shown(root, path)}: forwardPorts entry {port!r} left out")
    command = data.get("postCreateCommand")
    commands: list[object] = list(command.values()) if isinstance(command, dict) else [command]
    for item in commands:
        if isinstance(item, str) and item.strip():
            acc.setup.append(SetupStep(run=item))
        elif isinstance(item, list) and all(isinstance(p, str) for p in item):
            acc.setup.append(SetupStep(run=shlex.join(item)))
    if data.get("features"):
        acc.warnings.append(
            f"{shown(root, path)}: features ({', '.join(data['features'])}) are not taken over"
        )
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_devcontainer(text, path, root=root)
