"""envd.yaml: any bytes through the pure parser `load_spec` uses (no temp project per input:
the files it names are served from memory, as load_spec's readers would serve them)."""

from __future__ import annotations

from envd.model.spec_parser import parse_spec

_FILES = {
    "requirements.txt": "numpy==1.26.4\n-r more.txt\n",
    "more.txt": "requests>=2\n",
    "pyproject.toml": '[project]\nname = "p"\ndependencies = ["rich"]\n',
    "postBuild": "echo hi\n",
}


def _read_text(relpath: str) -> str:
    if relpath in _FILES:
        return _FILES[relpath]
    raise FileNotFoundError(relpath)


def target(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the reader refuses it before parsing (projectfiles.decode_utf8)
    parse_spec(
        text,
        source="/project/envd.yaml",
        project_dir="/project",
        read_text=_read_text,
        is_file=lambda relpath: relpath in _FILES,
    )
