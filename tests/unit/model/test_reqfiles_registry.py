"""The registry of requirements formats: every format's `parse` has the one signature and
reads what the format-specific reader reads."""

from __future__ import annotations

import pytest

from envd.errors import SpecError
from envd.model import reqfiles
from envd.model.spec_parser import parse_spec

SAMPLES = {
    "requirements": ("requirements.txt", "numpy==1.26.4\n-r more.txt\n"),
    "constraints": ("constraints.txt", "numpy<2\n"),
    "pyproject": ("pyproject.toml", '[project]\nname = "p"\ndependencies = ["numpy"]\n'),
    "uv.lock": ("uv.lock", '[[package]]\nname = "numpy"\nversion = "1.26.4"\n'),
    "pylock": ("pylock.toml", 'lock-version = "1.0"\n[[packages]]\nname = "numpy"\n'),
    "Pipfile": ("Pipfile", '[packages]\nnumpy = "*"\n'),
    "Pipfile.lock": ("Pipfile.lock", '{"default": {"numpy": {"version": "==1.26.4"}}}'),
    "environment.yml": ("environment.yml", "dependencies:\n  - python=3.11\n  - numpy\n"),
    "devcontainer": (".devcontainer/devcontainer.json", '{"image": "python:3.11"} // c'),
    "apt.txt": ("apt.txt", "git\n"),
    "runtime.txt": ("runtime.txt", "python-3.11\n"),
    ".python-version": (".python-version", "3.11\n"),
    "postBuild": ("postBuild", "#!/bin/bash\necho hi\n"),
    "cog": ("cog.yaml", "build:\n  python_version: '3.11'\n  python_requirements: r.txt\n"),
    "build.envd": ("build.envd", 'def build():\n    install.python_packages(name=["numpy"])\n'),
}
INCLUDED = {"more.txt": "pandas\n", "r.txt": "torch\n"}


def test_every_format_is_registered() -> None:
    assert set(reqfiles.PARSERS) == set(SAMPLES)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_each_parser_reads_its_format_through_the_one_signature(fmt: str) -> None:
    path, text = SAMPLES[fmt]
    parsed = reqfiles.PARSERS[fmt](text, path, root="/p", read=INCLUDED.get)
    assert parsed.format == fmt
    assert parsed.source == path
    assert (
        parsed.requirements
        or parsed.constraints
        or parsed.python
        or parsed.system
        or (parsed.setup)
    )


def test_a_requirements_file_includes_through_read() -> None:
    parsed = reqfiles.PARSERS["requirements"](
        "numpy\n-r more.txt\n", "requirements.txt", read=INCLUDED.get
    )
    assert parsed.requirements == ("numpy", "pandas")
    assert parsed.files == ("requirements.txt", "more.txt")


def test_an_error_names_the_file_under_root() -> None:
    with pytest.raises(SpecError) as caught:
        reqfiles.PARSERS["uv.lock"]("[[package]\n", "uv.lock", root="/p")
    assert caught.value.file == "/p/uv.lock"


def test_a_setup_step_read_from_a_file_is_the_one_envd_yaml_holds() -> None:
    adopted = reqfiles.PARSERS["postBuild"]("#!/bin/bash\necho hi\n", "postBuild")
    spec = parse_spec(
        "base: {debian: bookworm}\nsetup: [{run: bash postBuild, files: [postBuild]}]\n",
        source="/p/envd.yaml",
        project_dir="/p",
    )
    assert spec.setup_steps == adopted.setup
