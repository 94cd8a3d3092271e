""".devcontainer/devcontainer.json for a built envd image (Dev Containers specification).

Pure: no I/O. The file opens the image as is (no build, no features): `image` should be the
shared image by digest (registry/repo@sha256:...) so every editor opens the same bits, or the
local image ID. The project is bind-mounted at `workspace`, which is also `workspaceFolder`;
processes run as the image's user, whose UID the tool may change to the local user's
(`updateRemoteUserUID`, honoured on Linux) so files written in the mount keep their owner.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from envd.model.plan import WORKDIR

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_PORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*:\d+")


def render_devcontainer(
    name: str,
    image: str,
    user: str,
    uid: int,
    env: Mapping[str, str] | Iterable[tuple[str, str]],
    ports: Iterable[int | str],
    workspace: str = WORKDIR,
) -> str:
    """The devcontainer.json text; the same arguments always give the same bytes.

    `ports`: container ports (ints) or "host:port" strings, forwarded to the local machine.
    `uid` is the UID `user` has in the image: root (0) is never remapped, any other user is.
    """
    if not name.strip():
        raise ValueError("devcontainer: the name is empty")
    if not image.strip() or any(c.isspace() for c in image):
        raise ValueError(f"devcontainer: not an image reference: {image!r}")
    if not user.strip() or ":" in user:
        raise ValueError(f"devcontainer: not a user name: {user!r}")
    if uid < 0:
        raise ValueError(f"devcontainer: not a UID: {uid}")
    if not posixpath.isabs(workspace) or "," in workspace or "=" in workspace:
        raise ValueError(f"devcontainer: the workspace must be an absolute path: {workspace!r}")
    workspace = posixpath.normpath(workspace)
    items = env.items() if isinstance(env, Mapping) else env
    container_env: dict[str, str] = {}
    for key, value in sorted(items):
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"devcontainer: not an environment variable name: {key!r}")
        container_env[key] = value
    config: dict[str, Any] = {
        "name": name,
        "image": image,
        "workspaceFolder": workspace,
        "workspaceMount": f"source=${{localWorkspaceFolder}},target={workspace},type=bind",
        "containerUser": user,
        "remoteUser": user,
        "updateRemoteUserUID": uid != 0 and user != "root",
    }
    if container_env:
        config["containerEnv"] = container_env
    if forward := _ports(ports):
        config["forwardPorts"] = forward
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def _ports(ports: Iterable[int | str]) -> list[int | str]:
    numbers: set[int] = set()
    named: set[str] = set()
    for port in ports:
        if isinstance(port, bool):
            raise ValueError(f"devcontainer: not a port: {port!r}")
        if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
            number = int(port)
            if not 1 <= number <= 65535:
                raise ValueError(f"devcontainer: not a port: {port!r}")
            numbers.add(number)
        elif isinstance(port, str) and _HOST_PORT.fullmatch(port):
            if not 1 <= int(port.rsplit(":", 1)[1]) <= 65535:
                raise ValueError(f"devcontainer: not a port: {port!r}")
            named.add(port)
        else:
            raise ValueError(f"devcontainer: not a port: {port!r}")
    return [*sorted(numbers), *sorted(named)]
