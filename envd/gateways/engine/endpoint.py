"""How the engine is reached: DOCKER_HOST (unix://, tcp:// with TLS, ssh://), else the Docker
context, resolved as the docker CLI resolves it, before anything is contacted."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envd.gateways.engine.errors import short

DEFAULT_HOST = "unix:///var/run/docker.sock"


def engine_is_remote(host: str) -> bool:
    """THE rule: an engine on a local socket shares our filesystem; any other does not.

    unix:// (and npipe://, fd://) are this machine's engine, whose bind mounts see our files;
    tcp:// and ssh:// are another machine (even tcp://127.0.0.1 may be a dockerd in its own
    mount namespace), so host paths must be copied to it.
    """
    scheme = host.split("://", 1)[0] if "://" in host else "unix"
    return scheme not in ("unix", "http+unix", "npipe", "fd")


@dataclass(frozen=True)
class EngineEndpoint:
    """Which engine envd talks to, resolved the way the docker CLI does, before connecting."""

    host: str  # "unix:///var/run/docker.sock", "tcp://gpu1:2376", "ssh://me@gpu1"
    context: str = ""  # the Docker context that named it; "" when DOCKER_HOST did
    tls: Any = None  # docker.tls.TLSConfig, or None
    error: str = ""  # why it cannot be used (an unknown context); "" when it can
    hint: str = ""

    @property
    def remote(self) -> bool:
        return engine_is_remote(self.host)

    @property
    def source(self) -> str:
        """How it was chosen, for `envctl info`: "DOCKER_HOST" or "context NAME"."""
        return f"context {self.context}" if self.context else "DOCKER_HOST"


def resolve_endpoint(environ: Mapping[str, str] | None = None) -> EngineEndpoint:
    """DOCKER_HOST (with DOCKER_TLS_VERIFY / DOCKER_CERT_PATH) when set; else the Docker
    context DOCKER_CONTEXT names, else the current one in ~/.docker/config.json."""
    import docker.context
    import docker.errors
    import docker.utils
    from docker.context.config import get_current_context_name

    env = dict(os.environ if environ is None else environ)
    if env.get("DOCKER_HOST"):
        try:
            params = docker.utils.kwargs_from_env(environment=env)
        except docker.errors.DockerException as exc:  # TLS asked for, but no certificates
            return EngineEndpoint(
                host=env["DOCKER_HOST"],
                error=f"cannot use TLS for DOCKER_HOST={env['DOCKER_HOST']}: {short(exc)}",
                hint="DOCKER_CERT_PATH (default ~/.docker) must hold ca.pem, cert.pem and "
                "key.pem; or unset DOCKER_TLS_VERIFY",
            )
        return EngineEndpoint(host=str(params["base_url"]), tls=params.get("tls"))
    named_by = "DOCKER_CONTEXT" if env.get("DOCKER_CONTEXT") else "~/.docker/config.json"
    name = env.get("DOCKER_CONTEXT") or ""
    try:
        if not name:
            name = str(get_current_context_name() or "default")
        if name == "default":
            return EngineEndpoint(host=DEFAULT_HOST, context="default")
        ctx = docker.context.ContextAPI.get_context(name)
    except (docker.errors.DockerException, OSError, ValueError, KeyError) as exc:
        return EngineEndpoint(
            host="",
            context=name,
            error=f"the Docker context {name!r} ({named_by}) cannot be read: {short(exc)}",
            hint="check it with `docker context inspect NAME`, or set DOCKER_HOST",
        )
    if ctx is None or not ctx.Host:
        return EngineEndpoint(
            host="",
            context=name,
            error=f"the Docker context {name!r} that {named_by} names is not known",
            hint="`docker context ls` lists the known ones; pick one with DOCKER_CONTEXT=NAME "
            "or `docker context use NAME`, or set DOCKER_HOST",
        )
    return EngineEndpoint(host=str(ctx.Host), context=name, tls=ctx.TLSConfig)
