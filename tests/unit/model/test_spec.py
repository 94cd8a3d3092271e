"""envd.yaml parsing: defaults, normalisation, every field."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.gateways.projectfiles import load_spec
from envd.model.spec import Base, Runs, SetupStep, suggest_name
from envd.model.spec_parser import parse_spec

ROOT = Path(__file__).resolve().parents[3]


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


# ---------------------------------------------------------------- new keys


def test_new_keys_default_safely() -> None:
    spec = parse("base: {debian: bookworm}\n")
    assert spec.requirements_files == () and spec.requirements_file is None
    assert spec.constraints == () and spec.overrides == ()
    assert spec.project is None
    assert spec.runs == Runs()
    assert spec.setup_steps == ()


def test_new_keys_are_parsed_and_normalised() -> None:
    spec = parse(
        """
base: {debian: bookworm}
requirements: [req.txt, ./deps/dev.txt]
constraints: ["NumPy < 2"]
overrides: ["pandas == 2.2.2"]
project: install
runs:
  params: [./params.yaml]
  data: [data/, raw//x.csv]
  outputs: [models/]
  metrics: [metrics.json]
setup:
  - echo one
  - {run: bash postBuild, files: [postBuild, scripts/]}
""",
        {"req.txt": "six\n", "deps/dev.txt": "idna==3.7\r\n"},
    )
    assert spec.requirements_files == ("req.txt", "deps/dev.txt")
    assert spec.requirements_file == "req.txt"
    assert spec.requirements == ("six", "idna==3.7")
    assert spec.constraints == ("NumPy<2",) and spec.overrides == ("pandas==2.2.2",)
    assert spec.project == "install"
    assert spec.runs == Runs(
        params=("params.yaml",),
        data=("data/", "raw/x.csv"),
        outputs=("models/",),
        metrics=("metrics.json",),
    )
    assert spec.setup == ("echo one", "bash postBuild")
    assert spec.setup_steps == (
        SetupStep("echo one"),
        SetupStep("bash postBuild", ("postBuild", "scripts/")),
    )


def test_requirements_file_errors_name_the_absolute_file() -> None:
    with pytest.raises(SpecError) as info:
        parse(
            "base: {debian: bookworm}\nrequirements: r.txt\n",
            {"r.txt": "six\nx @ git+https://h/x\n"},
        )
    assert info.value.file == "/p/My_Proj/r.txt" and info.value.line == 2
    assert "VCS requirement" in info.value.message


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("numpy==1.0 --hash=sha256:00", "not a sha256 digest"),
        ("numpy --hash=sha256:" + "a" * 64, "no exact version"),
        ("--find-links ./wheels", "`--find-links"),
        ("-e .", "`-e`"),
        ("https://example.com/x-1.0.tar.gz", "URL requirement"),
        ("./libs/x", "local path requirement"),
        ("x-1.0-py3-none-any.whl", "local path requirement"),
        ("x @ file:///opt/x", "local path requirement"),
    ],
)
def test_requirements_file_lines_refused(line: str, expect: str) -> None:
    with pytest.raises(SpecError) as info:
        parse("base: {debian: bookworm}\nrequirements: r.txt\n", {"r.txt": f"six\n\n{line}\n"})
    assert info.value.line == 3 and expect in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("Yes", True), ("ON", True), ("false", False), ("NO", False), ("Off", False)],
)
def test_watch_reads_every_yaml_boolean(value: str, expected: bool) -> None:
    assert parse(f"base: {{debian: bookworm}}\nwatch: {value}\n").watch is expected


def test_env_values_keep_the_text_as_written() -> None:
    spec = parse("base: {debian: bookworm}\nenv: {A: 0x10, B: 1.50, C: yes, D: ''}\n")
    assert dict(spec.env) == {"A": "0x10", "B": "1.50", "C": "yes", "D": ""}


@pytest.mark.parametrize(
    ("directory", "suggestion"),
    [("rel..dd", "rel-dd"), ("rel._x", "rel-x"), ("My Project", "my-project"), ("café", "cafe")],
)
def test_directory_default_name_must_be_valid(directory: str, suggestion: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("base: {debian: bookworm}\n", source="envd.yaml", project_dir=f"/p/{directory}")
    assert info.value.key_path == "name"
    assert info.value.hint == f"set `name: {suggestion}` in envd.yaml"
    assert suggest_name(directory) == suggestion
    # the suggestion is itself accepted
    spec = parse_spec(
        f"name: {suggestion}\nbase: {{debian: bookworm}}\n", source="envd.yaml", project_dir="/x"
    )
    assert spec.name == suggestion


@pytest.mark.parametrize("name", ["a", "a.b", "a_b", "a__b", "a---b", "x9", "a" * 128])
def test_docker_valid_names_are_accepted(name: str) -> None:
    assert parse(f"name: {name}\nbase: {{debian: bookworm}}\n").name == name


@pytest.mark.parametrize(
    "image",
    [
        "python:3.11-slim",
        "localhost:5000/team/churn",
        "registry.example.com/a/b:v1.2",
        "python@sha256:" + "0" * 64,
        "python:3.11@sha256:" + "a" * 64,
    ],
)
def test_image_references_are_accepted(image: str) -> None:
    assert parse(f"base: {{image: '{image}'}}\n").base.image == image


# Inputs that once crashed (exit 3) or look odd: each must give a Spec or a SpecError, never
# another exception. Not a corpus case each, because several are several lines of noise.
ODD = [
    "ports: [0x50]",
    "ports: [0o17]",
    "ports: [1_000]",
    "ports: [.inf]",
    "ports: [" + "9" * 5000 + "]",
    "version: " + "7" * 5000,
    "a: &a [*a]",
    "env: &a {A: *a}",
    "? &a [*a]\n: 1",
    "env: {A: !!binary aGVsbG8=}",
    "env: {A: !custom x}",
    "env: {A: 1e400}",
    "env: {1: x}",
    "env: {~: x}",
    "packages: [" * 1000 + "]" * 1000,
    "x:\n" + "".join("  " * i + "y:\n" for i in range(1, 300)),
    "setup: [{run: [x]}]",
    "setup: [{}]",
    "runs: ~",
    "runs: {params: ~}",
    "requirements: [[a]]",
    "requirements: ~",
    "python: !!python/name:os.system x",
    "name: !!python/object/apply:os.system [echo]",
    "\x00",
    "packages: ['\x85']",
    "%TAG ! tag:x,2000:\n---\nbase: !x {debian: bookworm}",
]


@pytest.mark.parametrize("extra", ODD, ids=range(len(ODD)))
def test_odd_inputs_never_crash(extra: str) -> None:
    text = extra if extra.startswith("%") else "base: {debian: bookworm}\n" + extra + "\n"
    try:
        parse(text, {"r.txt": "six\n"})
    except SpecError as exc:
        assert exc.line is not None and exc.line >= 1
        assert exc.file == "envd.yaml"


def test_requirements_file_with_a_byte_order_mark_and_crlf() -> None:
    spec = parse(
        "base: {debian: bookworm}\nrequirements: r.txt\n", {"r.txt": "\ufeffsix\r\nidna\r\n"}
    )
    assert spec.requirements == ("six", "idna")


def parse_with_files(text: str, files: dict[str, str]):  # type: ignore[no-untyped-def]
    return parse_spec(
        text,
        source="envd.yaml",
        project_dir="/p/proj",
        read_text=lambda rel: files[rel],
        is_file=files.__contains__,
    )


def test_start_names_a_project_file() -> None:
    files = {"binder/start": '#!/bin/sh\nexec "$@"\n'}
    spec = parse_with_files("base: {debian: bookworm}\nstart: ./binder//start\n", files)
    assert spec.start == "binder/start"
    assert parse_with_files("base: {debian: bookworm}\n", files).start is None
    for value, expect in (
        ("start", "`start` is not a file in the project"),
        ("../start", "points outside the project"),
        ("/usr/bin/start", "is not relative to the project"),
        ("binder/", "names a folder"),
    ):
        with pytest.raises(SpecError, match=expect) as info:
            parse_with_files(f"base: {{debian: bookworm}}\nstart: {value}\n", files)
        assert "start" in str(info.value)


def test_path_in_env_is_kept_and_dollar_path_is_refused_with_the_full_value() -> None:
    spec = parse_with_files("base: {debian: bookworm}\nenv: {PATH: /opt/x/bin:/usr/bin}\n", {})
    assert spec.env == (("PATH", "/opt/x/bin:/usr/bin"),)
    for value in ("/opt/x/bin:$PATH", "/opt/x/bin:${PATH}"):
        with pytest.raises(SpecError, match="does not expand variables") as info:
            parse_with_files(f"base: {{debian: bookworm}}\nenv: {{PATH: '{value}'}}\n", {})
        assert "env.PATH" in str(info.value)
        assert info.value.hint == (
            "write it in full: `PATH: /opt/x/bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:"
            "/usr/sbin:/usr/bin:/sbin:/bin`"
        )
    other = parse_with_files("base: {debian: bookworm}\nenv: {GREETING: $PATHS}\n", {})
    assert other.env == (("GREETING", "$PATHS"),)


def test_a_setup_command_naming_an_unlisted_project_file_is_refused_with_the_fix() -> None:
    files = {"postBuild": "echo hi\n", "scripts/a.sh": "", "requirements.txt": "six\n"}
    with pytest.raises(SpecError, match="names the project file `postBuild`") as info:
        parse_with_files("base: {debian: bookworm}\nsetup: [bash postBuild]\n", files)
    assert "envd.yaml:2: setup[0]" in str(info.value)
    assert info.value.hint == "list it: `- run: bash postBuild` with `files: [postBuild]` under it"
    with pytest.raises(SpecError, match=r"`requirements\.txt`") as info:
        parse_with_files(
            "base: {debian: bookworm}\nsetup:\n"
            "  - {run: 'bash postBuild && pip install -r requirements.txt', files: [postBuild]}\n",
            files,
        )
    assert "files: [postBuild, requirements.txt]" in str(info.value.hint)
    fine = parse_with_files(
        "base: {debian: bookworm}\nsetup:\n"
        "  - {run: bash postBuild, files: [postBuild]}\n"
        "  - {run: sh scripts/a.sh, files: [scripts/]}\n"
        "  - python -m pip --version  # postBuild in a comment\n"
        "  - cat /etc/os-release missing.txt $HOME/postBuild\n",
        files,
    )
    assert len(fine.setup_steps) == 4
