from __future__ import annotations

import json
from typing import Any

import pytest

from envd.model.devcontainer import render_devcontainer

IMAGE = "registry.example.org/team/demo@sha256:" + "d" * 64

# The properties this renderer writes and their types in the Dev Containers reference
# (containers.dev/implementors/json_reference): name, image, workspaceFolder, workspaceMount,
# containerUser, remoteUser are strings; updateRemoteUserUID a boolean; containerEnv an object of
# strings; forwardPorts an array of port numbers or "host:port" strings.
STRING_PROPERTIES = (
    "name",
    "image",
    "workspaceFolder",
    "workspaceMount",
    "containerUser",
    "remoteUser",
)


def check_reference_types(config: dict[str, Any]) -> None:
    allowed = {*STRING_PROPERTIES, "updateRemoteUserUID", "containerEnv", "forwardPorts"}
    assert set(config) <= allowed, set(config) - allowed
    for key in STRING_PROPERTIES:
        assert isinstance(config[key], str) and config[key], key
    assert isinstance(config["updateRemoteUserUID"], bool)
    env = config.get("containerEnv", {})
    assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values())
    for port in config.get("forwardPorts", []):
        if isinstance(port, int):
            assert not isinstance(port, bool) and 0 < port < 65536
        else:
            host, _, number = port.rpartition(":")
            assert host and number.isdigit()
    # an image-based config: workspaceMount needs workspaceFolder, and the mount's target is it
    mount = dict(part.split("=", 1) for part in config["workspaceMount"].split(","))
    assert mount["source"] == "${localWorkspaceFolder}"
    assert mount["target"] == config["workspaceFolder"]
    assert mount["type"] == "bind"


def render(**changes: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "name": "demo",
        "image": IMAGE,
        "user": "dev",
        "uid": 1000,
        "env": {"PYTHONHASHSEED": "0", "HF_HOME": "/cache/hf"},
        "ports": [8888, 6006],
    }
    text = render_devcontainer(**{**args, **changes})
    assert text.endswith("\n")
    config: dict[str, Any] = json.loads(text)
    check_reference_types(config)
    return config


def test_opens_the_image_with_the_project_at_workspace() -> None:
    config = render()
    assert config == {
        "name": "demo",
        "image": IMAGE,
        "workspaceFolder": "/workspace",
        "workspaceMount": "source=${localWorkspaceFolder},target=/workspace,type=bind",
        "containerUser": "dev",
        "remoteUser": "dev",
        "updateRemoteUserUID": True,
        "containerEnv": {"HF_HOME": "/cache/hf", "PYTHONHASHSEED": "0"},
        "forwardPorts": [6006, 8888],
    }


def test_output_is_deterministic_whatever_the_input_order() -> None:
    a = render_devcontainer("d", IMAGE, "dev", 1000, {"B": "2", "A": "1"}, [2, 1, 1])
    b = render_devcontainer("d", IMAGE, "dev", 1000, [("A", "1"), ("B", "2")], (1, 2))
    assert a == b
    assert list(json.loads(a)["containerEnv"]) == ["A", "B"]
    assert json.loads(a)["forwardPorts"] == [1, 2]


def test_root_is_never_remapped() -> None:
    assert render(user="root", uid=0)["updateRemoteUserUID"] is False
    assert render(user="dev", uid=0)["updateRemoteUserUID"] is False
    assert render(user="dev", uid=1001)["updateRemoteUserUID"] is True


def test_another_workspace_moves_both_folder_and_mount() -> None:
    config = render(workspace="/home/dev/project/")
    assert config["workspaceFolder"] == "/home/dev/project"
    assert config["workspaceMount"].endswith("target=/home/dev/project,type=bind")


def test_empty_env_and_ports_are_left_out_and_host_ports_are_kept() -> None:
    config = render(env={}, ports=[])
    assert "containerEnv" not in config and "forwardPorts" not in config
    assert render(ports=["db:5432", 3000, "8080"])["forwardPorts"] == [3000, 8080, "db:5432"]


@pytest.mark.parametrize(
    "changes",
    [
        {"workspace": "workspace"},
        {"workspace": "/a,b"},
        {"image": ""},
        {"image": "demo latest"},
        {"user": ""},
        {"uid": -1},
        {"env": {"NOT-A-NAME": "x"}},
        {"ports": [0]},
        {"ports": [70000]},
        {"ports": ["db:99999"]},
        {"ports": ["nope"]},
        {"ports": [True]},
        {"name": " "},
    ],
)
def test_invalid_arguments_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="devcontainer"):
        render(**changes)
