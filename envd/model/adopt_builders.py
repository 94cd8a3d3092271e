"""What `adopt` takes from other container builders' files: cog.yaml's extras and build.envd.

Pure, as envd.model.adopt is: `found` is adopt's accumulator (its `_Found`), passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from envd.model import reqfiles
from envd.model.reqfiles import Parsed

BUILD_ENVD = "build.envd"


class _Found(Protocol):
    """adopt's accumulator (envd.model.adopt._Found), as this module uses it."""

    doc: dict[str, Any]
    notes: list[str]

    def take(self, parsed: Parsed) -> None: ...

    def extend(
        self, key: str, items: list[Any] | tuple[Any, ...], source: str, what: str
    ) -> None: ...


def take_gpu_env(found: _Found, parsed: Parsed, source: str, why: str) -> None:
    """A GPU the file asks for as `gpu: auto` (built with CUDA, runs without a GPU too, as the
    file's own tool does), its CUDA version, and its environment variables as `env:`."""
    if parsed.gpu:
        found.doc["gpu"] = "auto"
        found.notes.append(
            f"took gpu: auto from {source} ({why}): built for CUDA, and runs without a GPU "
            "where there is none; write `gpu: required` to refuse that"
        )
    if parsed.cuda:
        found.doc["cuda"] = parsed.cuda
        found.notes.append(f"took cuda {parsed.cuda} from {source}")
    if parsed.env:
        env: dict[str, Any] = found.doc.setdefault("env", {})
        env.update(dict(parsed.env))


def take_build_envd(found: _Found, files: Mapping[str, str], root: str) -> None:
    """tensorchord/envd's build.envd, read (never run) by reqfiles.parse_build_envd."""
    text = files.get(BUILD_ENVD)
    if text is None:
        return
    parsed = reqfiles.parse_build_envd(text, files.get, root=root)
    found.take(parsed)
    found.extend("system", parsed.system, BUILD_ENVD, "system packages (install.apt_packages)")
    found.extend("packages", parsed.requirements, BUILD_ENVD, "packages (install.python_packages)")
    found.extend(
        "requirements", parsed.requirement_files, BUILD_ENVD, "requirements (python_packages)"
    )
    found.extend("indexes", parsed.indexes, BUILD_ENVD, "indexes (config.pip_index)")
    found.extend("ports", parsed.ports, BUILD_ENVD, "ports (runtime.expose)")
    entries: list[Any] = [step.run for step in parsed.setup]
    found.extend("setup", entries, BUILD_ENVD, "setup steps (run)")
    take_gpu_env(found, parsed, BUILD_ENVD, "install.cuda or config.gpu")
