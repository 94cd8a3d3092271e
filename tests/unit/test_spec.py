"""envd.yaml parsing: defaults, normalisation, every field."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec
from envd.model.spec import Base, parse_spec

ROOT = Path(__file__).resolve().parent.parent.parent


def parse(text: str, files: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    files = files or {}

    def read(rel: str) -> str:
        if rel not in files:
            raise FileNotFoundError(rel)
        return files[rel]

    return parse_spec(text, source="envd.yaml", project_dir="/p/My_Proj", read_text=read)


def test_minimal_spec_defaults() -> None:
    spec = parse("base: {debian: bookworm}\n")
    assert spec.base == Base(debian="bookworm")
    assert spec.name == "my_proj"
    assert spec.gpu == "auto"
    assert spec.watch is True
    assert spec.packages == () and spec.python is None


def test_every_field() -> None:
    spec = parse(
        """
version: 1
name: churn
base: {image: "python:3.11-slim"}
python: "3.11"
system: [git, libgomp1=12.2.0-14]
packages: ["NumPy >= 1.26", pandas]
requirements: req.txt
indexes: ["https://download.pytorch.org/whl/cu124/"]
gpu: required
cuda: "12.4"
env: {B: 2, A: "x"}
setup: ["echo hi"]
ports: [8888]
watch: false
""",
        {"req.txt": "# comment\nrequests==2.32.3  # pinned\n\nscipy\n"},
    )
    assert spec.name == "churn"
    assert spec.base.image == "python:3.11-slim"
    assert spec.system == ("git", "libgomp1=12.2.0-14")
    assert spec.packages == ("NumPy>=1.26", "pandas")
    assert spec.requirements == ("requests==2.32.3", "scipy")
    assert spec.all_requirements[-1] == "scipy"
    assert spec.indexes == ("https://download.pytorch.org/whl/cu124",)
    assert spec.gpu == "required" and spec.cuda == "12.4"
    assert spec.env == (("A", "x"), ("B", "2"))
    assert spec.setup == ("echo hi",) and spec.ports == (8888,) and spec.watch is False


def test_first_error_wins_and_names_key_path() -> None:
    with pytest.raises(SpecError) as info:
        parse("base: {debian: bookworm}\npackages: [ok, 'bad req!!']\n")
    assert info.value.key_path == "packages[1]"
    assert info.value.line == 2


@pytest.mark.parametrize("name", ["default", "sklearn", "pytorch-cpu", "pytorch-cuda", "jupyter"])
def test_templates_parse(name: str) -> None:
    spec = load_spec(ROOT / "environments" / name)
    assert spec.name == name
    assert spec.base.debian == "bookworm"
