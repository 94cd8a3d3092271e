"""What `pip install .` (not editable) ships: every package, and the templates."""

from __future__ import annotations

import configparser

from tests.conftest import ROOT


def test_every_code_folder_is_a_package() -> None:
    for top in ("envd", "cli"):
        for folder in [ROOT / top, *(p for p in (ROOT / top).rglob("*") if p.is_dir())]:
            if folder.name == "__pycache__" or not list(folder.glob("*.py")):
                continue
            assert (folder / "__init__.py").exists(), f"{folder} lacks __init__.py"


def test_every_template_is_installed() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    shipped = config["options.data_files"]
    for template in (ROOT / "environments").iterdir():
        key = f"share/envd/environments/{template.name}"
        assert key in shipped and "envd.yaml" in shipped[key], template.name
