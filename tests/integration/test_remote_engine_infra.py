"""The simulated remote engine the team tests run against is real and separate."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.integration


def docker(host: str, *args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": host}
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_second_engine_is_empty_and_separate(remote_docker_host: str) -> None:
    assert remote_docker_host.startswith("tcp://127.0.0.1:")
    info = json.loads(docker(remote_docker_host, "info", "--format", "{{json .}}"))
    local = json.loads(docker("unix:///var/run/docker.sock", "info", "--format", "{{json .}}"))
    assert info["DockerRootDir"] != local["DockerRootDir"]
    assert info["ID"] != local["ID"]
    # (empty when the session starts it; other tests fill it, so that is not checked here)
    ids = set(docker(remote_docker_host, "images", "-q", "--no-trunc").split())
    local_ids = set(docker("unix:///var/run/docker.sock", "images", "-q", "--no-trunc").split())
    assert not (ids - local_ids) or ids != local_ids
