"""Reading a project's own files (envd.yaml, the requirements it names, envd.lock).

The one place envd reads files a user controls, so the checks every such read needs live
here; the parsing itself is pure (envd.model).
"""

from __future__ import annotations

from pathlib import Path

from envd.errors import SpecError
from envd.model.lockfile import LockFile, loads
from envd.model.spec import SPEC_FILENAME, Spec, parse_spec


def load_spec(project_dir: str | Path) -> Spec:
    """Read and validate <project_dir>/envd.yaml and the requirements file it names."""
    root = Path(project_dir).resolve()
    path = root / SPEC_FILENAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(
            "no envd.yaml here",
            file=str(path),
            hint=f"create one with `envctl init {root}` (templates: `envctl init --list`)",
        ) from None
    except UnicodeDecodeError:
        raise SpecError("not UTF-8 text", file=str(path), line=1) from None

    def read_text(relpath: str) -> str:
        return (root / relpath).read_text()

    return parse_spec(text, source=str(path), project_dir=str(root), read_text=read_text)


def read_lock(path: Path) -> LockFile | None:
    """The lock at `path`, or None when there is none."""
    if not path.exists():
        return None
    return loads(path.read_text(), str(path))
