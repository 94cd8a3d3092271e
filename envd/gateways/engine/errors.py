"""THE error translator: every docker SDK (and requests) exception becomes an envd error here,
the same way for every facet of the engine."""

from __future__ import annotations

from envd.errors import (
    EngineUnavailable,
    EnvdError,
    NotFound,
)


def short(exc: BaseException) -> str:
    # An API error's text leads with the request URL (long: a commit's changes); its
    # explanation is what the engine said.
    explanation = getattr(exc, "explanation", None)
    status = getattr(exc, "status_code", None)
    if isinstance(explanation, str) and explanation.strip():
        return (f"{status} " if status else "") + explanation.strip()[:300]
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else type(exc).__name__


def engine_error(exc: BaseException) -> EnvdError:
    """Map an SDK exception to the error root without inspecting message text for meaning."""
    import docker.errors
    import requests.exceptions

    if isinstance(exc, EnvdError):
        return exc
    if isinstance(
        exc, requests.exceptions.ConnectionError | docker.errors.DockerException
    ) and not isinstance(exc, docker.errors.APIError):
        return EngineUnavailable(
            f"the container engine does not answer ({short(exc)})",
            hint="start it with `make engine` (or `dockerd &`), then retry",
        )
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 404:
        return NotFound(short(exc))
    return EnvdError(f"the container engine refused: {short(exc)}")


def registry_hint(text: str) -> str:
    lowered = text.lower()
    if "unauthorized" in lowered or "authentication required" in lowered:
        return "log in first: `docker login REGISTRY` (envd uses Docker's stored credentials)"
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered:
        return "is the registry running and reachable from the engine?"
    return "check the registry address and your access to it"
