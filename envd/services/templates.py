"""Ready environments (environments/<name>/envd.yaml) that `envctl init` copies."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from envd.errors import Conflict, NotFound
from envd.model.spec import SPEC_FILENAME


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    path: Path


def templates_dir() -> Path:
    """$ENVD_TEMPLATES, else the source checkout's environments/, else the installed copy."""
    if os.environ.get("ENVD_TEMPLATES"):
        return Path(os.environ["ENVD_TEMPLATES"])
    for candidate in (
        Path(__file__).resolve().parents[2] / "environments",
        Path(sys.prefix) / "share" / "envd" / "environments",
    ):
        if candidate.is_dir():
            return candidate
    raise NotFound(
        "no environment templates are installed",
        hint="reinstall envd (`pip install envd`), or set ENVD_TEMPLATES to a folder of templates",
    )


def list_templates() -> list[Template]:
    root = templates_dir()
    found = []
    for spec in sorted(root.glob(f"*/{SPEC_FILENAME}")):
        found.append(Template(spec.parent.name, _description(spec), spec))
    return found


def _description(spec: Path) -> str:
    for line in spec.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def write_template(name: str, directory: Path) -> Path:
    """Copy template `name` into directory/envd.yaml; never overwrite an existing one."""
    by_name = {t.name: t for t in list_templates()}
    if name not in by_name:
        raise NotFound(
            f"no template named `{name}`", hint=f"templates are: {', '.join(sorted(by_name))}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SPEC_FILENAME
    try:
        with open(target, "x") as f:
            f.write(by_name[name].path.read_text())
    except FileExistsError:
        raise Conflict(
            f"{target} already exists; init never overwrites it",
            hint="edit it, or remove it first",
        ) from None
    return target
