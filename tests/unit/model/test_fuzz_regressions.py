"""Inputs the fuzz targets (tests/fuzz) found crashing or hanging a parser: each is now a
refusal (an EnvdError naming the file), never an internal error or a hang."""

from __future__ import annotations

import pytest

from envd.errors import LockError, SpecError
from envd.model import lockfile
from envd.model.reqfiles import (
    parse_environment_yml,
    parse_pyproject,
    parse_requirements,
    parse_uv_lock,
)
from envd.model.spec_parser import parse_spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 5000, "nested too deeply"),
        ('{"lock_version": ' + "1" * 5000 + "}", "not valid JSON"),
    ],
)
def test_lock_loader_refuses_what_json_cannot_hold(text: str, message: str) -> None:
    with pytest.raises(LockError, match=message):
        lockfile.loads(text, "envd.lock")


def test_uv_lock_with_an_unnamed_dependency_is_refused() -> None:
    text = (
        'version = 1\nrequires-python = ">=3.11"\n\n'
        '[[package]]\nname = "churn"\nversion = "1.1.0"\nsource = { editable = "." }\n'
        'dependencies = [{ maen = "numjy" }]\n\n'
        '[[package]]\nnade = "numpy"\nversion = "1.1.3"\n'
        'source = { registry = "https://pypi.org/simple" }\n'
    )
    with pytest.raises(SpecError, match=r"uv.lock: unexpected content: a value that is not valid"):
        parse_uv_lock(text, root="/p")


@pytest.mark.parametrize("parse", [parse_uv_lock, parse_pyproject])
def test_toml_nested_too_deeply_is_refused(parse: object) -> None:
    with pytest.raises(SpecError, match="nested too deeply"):
        parse("a = " + "[" * 5000, root="/p")  # type: ignore[operator]


def test_requirements_includes_through_a_looping_folder_are_bounded() -> None:
    # reqs/a.txt says `-r reqs/a.txt`: with a link reqs/reqs -> . every path is new
    def read(path: str) -> str:
        return "-r reqs/a.txt\n"

    with pytest.raises(SpecError, match="includes nested deeper than 32 files"):
        parse_requirements("reqs/a.txt", read, root="/p")


def test_requirements_includes_that_fan_out_are_bounded() -> None:
    def read(path: str) -> str:
        return "-r d/a.txt\n-r d/b.txt\n"

    with pytest.raises(SpecError, match="more than 256 reads"):
        parse_requirements("a.txt", read, root="/p")


def test_project_name_check_does_not_backtrack() -> None:
    # `[-]*` in Docker's pattern made this take minutes (exponential backtracking)
    text = "base: {debian: bookworm}\nname: " + "a" * 120 + "^a\n"
    with pytest.raises(SpecError, match="is not a valid project name"):
        parse_spec(text, source="/p/envd.yaml", project_dir="/p")


def test_a_package_url_that_urlsplit_refuses_is_a_spec_error() -> None:
    text = "base: {debian: bookworm}\npackages:\n  - pkg @ https://examplepkg-1.[.tar.gz\n"
    with pytest.raises(SpecError, match="names a URL that cannot be parsed"):
        parse_spec(text, source="/p/envd.yaml", project_dir="/p")


def test_image_reference_check_does_not_backtrack() -> None:
    # the same `[-]*` in the image path pattern: 80 letters took over 10 s
    text = 'base: {image: "' + "E" * 80 + 'pn@y"}\n'
    with pytest.raises(SpecError, match="is not an image reference"):
        parse_spec(text, source="/p/envd.yaml", project_dir="/p")


def test_environment_yml_with_a_control_character_is_a_spec_error() -> None:
    text = "dependenci\x01\x00\x00\x00\x00\x00\x00\x00es: [python=3.13]\n"
    with pytest.raises(SpecError, match=r"environment\.yml: YAML syntax error"):
        parse_environment_yml(text, root="/p")


def test_a_lock_url_urlsplit_rejects_is_refused() -> None:
    """Found by fuzz_lockfile: `http://[` (an invalid IPv6 host) raised ValueError from the
    direct-URL file name check."""
    import json

    from tests.unit.services.test_direct_urls import make_lock, url_package

    lock = make_lock(python=(url_package(url="http://[::1/x-1.0-py3-none-any.whl"),))
    data = json.loads(lockfile.dumps(lock))
    data["integrity"] = []
    with pytest.raises(LockError, match="Invalid IPv6 URL"):
        lockfile.loads(json.dumps(data), "envd.lock")
