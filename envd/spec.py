"""envd.yaml, schema version 1: the typed model and its pure parser.

Parsing never touches the network or Docker; `load_spec` reads the files and hands text to
`parse_spec`, which is pure and tested without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SPEC_FILENAME = "envd.yaml"
LOCK_FILENAME = "envd.lock"
SCHEMA_VERSION = 1

GpuMode = Literal["auto", "required", "none"]


@dataclass(frozen=True)
class Base:
    """Exactly one of `image` (any image reference) or `debian` (a suite, built with mmdebstrap)."""

    image: str | None = None
    debian: str | None = None


@dataclass(frozen=True)
class Spec:
    """A validated envd.yaml. Requirement strings are normalised (str(packaging Requirement))."""

    project_dir: str  # absolute path of the directory holding envd.yaml
    name: str
    base: Base
    python: str | None = None  # "3.11" or "3.11.2"
    system: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # from `packages:`
    requirements_file: str | None = None  # as written, relative to project_dir
    requirements: tuple[str, ...] = ()  # requirement lines read from requirements_file
    indexes: tuple[str, ...] = ()
    gpu: GpuMode = "auto"
    cuda: str | None = None  # "12.4"
    env: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs
    setup: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    watch: bool = True
    version: int = SCHEMA_VERSION

    @property
    def all_requirements(self) -> tuple[str, ...]:
        """`packages` then `requirements`, in the order written."""
        return self.packages + self.requirements
