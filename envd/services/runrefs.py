"""How runs are named in a registry: REGISTRY/REPO:RUN_ID (or @sha256:...), and the tag an
environment image gets beside its runs. Pure: nothing here talks to a registry."""

from __future__ import annotations

from envd.errors import UsageError
from envd.gateways.registry import Repository, parse_repository

ENV_TAG_PREFIX = "env-"


def split_run_reference(reference: str) -> tuple[Repository, str]:
    """REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:... -> (repository, tag or digest)."""
    if "@" in reference:
        name, _, ref = reference.partition("@")
    else:
        slash = reference.rfind("/")
        colon = reference.rfind(":")
        if colon <= slash:
            raise UsageError(
                f"{reference!r} names no run", hint="e.g. localhost:5000/team/churn:RUN_ID"
            )
        name, ref = reference[:colon], reference[colon + 1 :]
    repository = parse_repository(name)
    if not repository.host or not repository.name or not ref:
        raise UsageError(
            f"{reference!r} is not REGISTRY/REPO:RUN", hint="e.g. 127.0.0.1:5000/team/p:RUN"
        )
    return repository, ref


def is_shared_reference(text: str) -> bool:
    """Whether a run is named as REGISTRY/REPO:RUN (or @sha256:...) rather than by its id."""
    return "/" in text and (":" in text.rpartition("/")[2] or "@" in text)


def check_repository(to: str) -> Repository:
    if not to or " " in to or to.startswith("-") or "@" in to:
        raise UsageError(f"{to!r} is not REGISTRY/REPO", hint="e.g. localhost:5000/team/churn")
    repository = parse_repository(to)
    if not repository.name or ":" in repository.name:
        raise UsageError(
            f"{to!r} is not REGISTRY/REPO (a run is tagged by its id)",
            hint="e.g. localhost:5000/team/churn",
        )
    return repository
