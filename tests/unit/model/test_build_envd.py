"""build.envd (tensorchord/envd) read without running it, and cog.yaml's defaults and extras:
what `envctl init` takes from them, and what it names as not taken."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from envd.errors import SpecError
from envd.model import reqfiles as rf
from envd.model.adopt import adopt
from envd.model.reqfiles import SetupStep

ROOT = "/home/u/proj"


def reader(files: dict[str, str]) -> rf.Read:
    return files.get


def parse(text: str, files: dict[str, str] | None = None) -> rf.Parsed:
    return rf.parse_build_envd(text, reader(files or {}), root=ROOT)


def not_taken(parsed: rf.Parsed) -> list[str]:
    return [n for n in parsed.notes if ": not taken: " in n]


# ---------------------------------------------------------------- build.envd


def test_the_calls_envd_knows_are_taken() -> None:
    text = """# syntax=v1

def build():
    base(os="ubuntu20.04", language="python3.9")
    install.python_packages(name=["numpy==1.26.4", "rich"])
    install.apt_packages(name=["htop", "git"])
    runtime.environ(env={"MODE": "dev", "WORKERS": 4})
    runtime.expose(envd_port=8888, host_port=8888, service="jupyter")
    run(commands=["mkdir -p /data", "touch /data/ready"])
    install.cuda(version="11.6.2", cudnn="8")
    config.pip_index(url="https://mirror.example.com/simple")
"""
    parsed = parse(text)
    assert parsed.format == "build.envd"
    assert parsed.python == "3.9"
    assert parsed.requirements == ("numpy==1.26.4", "rich")
    assert [p.name for p in parsed.pins] == ["numpy"]
    assert parsed.system == ("htop", "git")
    assert parsed.env == (("MODE", "dev"), ("WORKERS", "4"))
    assert parsed.ports == (8888,)
    assert parsed.setup == (SetupStep(run="mkdir -p /data && touch /data/ready"),)
    assert parsed.gpu and parsed.cuda == "11.6"
    assert parsed.indexes == ("https://mirror.example.com/simple",)
    assert not_taken(parsed) == []
    assert any("base os ubuntu20.04 not taken" in n for n in parsed.notes)
    assert any("cudnn 8 not taken" in n for n in parsed.notes)


def test_positional_names_install_python_and_config_gpu() -> None:
    text = """def build():
    base(os="ubuntu22.04", language="python")
    install.python(version="3.13")
    install.python_packages(["via"])
    install.apt_packages(["ripgrep"])
    config.gpu(count=1)
"""
    parsed = parse(text)
    assert parsed.python == "3.13"
    assert parsed.requirements == ("via",)
    assert parsed.system == ("ripgrep",)
    assert parsed.gpu and parsed.cuda is None


def test_a_requirements_file_is_read_and_named() -> None:
    text = 'def build():\n    install.python_packages(requirements="./requirements.txt")\n'
    parsed = parse(text, {"requirements.txt": "pillow\n-r more.txt\n", "more.txt": "attrs\n"})
    assert parsed.requirement_files == ("requirements.txt",)
    assert parsed.files == ("build.envd", "requirements.txt", "more.txt")


def test_a_missing_requirements_file_is_an_error_naming_it() -> None:
    text = 'def build():\n    install.python_packages(requirements="reqs/dev.txt")\n'
    with pytest.raises(SpecError) as caught:
        parse(text)
    assert "file not found" in str(caught.value) and f"{ROOT}/reqs/dev.txt" in str(caught.value)


def test_a_requirements_file_outside_the_project_is_left_out() -> None:
    text = 'def build():\n    install.python_packages(requirements="../other/r.txt")\n'
    parsed = parse(text)
    assert parsed.requirement_files == ()
    assert any("outside the project" in w for w in parsed.warnings)


def test_helper_functions_are_followed_with_literal_arguments_bound() -> None:
    text = """def build():
    base(os="ubuntu22.04", language="python3")
    configure_streamlit(8501)
    configure_mnist()


def configure_streamlit(port, extra="x"):
    install.python_packages(["streamlit"])
    runtime.daemon(commands=[["streamlit", "hello", "--server.port", str(port)]])
    runtime.expose(envd_port=port, host_port=port, service="streamlit")


def configure_mnist():
    install.apt_packages(["libgl1"])


def serve():
    install.python_packages(["mosec"])
"""
    parsed = parse(text)
    assert parsed.requirements == ("streamlit",)  # not mosec: serve() is not build()
    assert parsed.system == ("libgl1",)
    assert parsed.ports == (8501,)
    assert not_taken(parsed) == [
        'build.envd: not taken: 9: runtime.daemon(commands=[["streamlit", "hello", '
        '"--server.port", str(port)]])'
    ]
    assert any("functions not called from build() not taken: serve" in n for n in parsed.notes)


def test_variables_fstrings_and_unknown_calls_are_named_by_line() -> None:
    text = """envdlib = include("https://github.com/tensorchord/envdlib")
PKGS = ["numpy"]

def build():
    base(os="ubuntu22.04", language="python3")
    install.python_packages(name=PKGS)
    install.apt_packages(name=[f"lib{'gl'}1"])
    config.jupyter()
    envdlib.tensorboard(8888)
    if True:
        install.python_packages(["rich"])
    io.copy(src="./x", dest="/")
    install.python_packages(name=["pandas"])
"""
    parsed = parse(text)
    assert parsed.requirements == ("pandas",)
    assert parsed.system == ()
    lines = not_taken(parsed)
    assert lines[0] == (
        'build.envd: not taken: 1: envdlib = include("https://github.com/tensorchord/envdlib")'
    )
    assert lines[1] == 'build.envd: not taken: 2: PKGS = ["numpy"]'
    literal = ": 6: install.python_packages(name=PKGS) (its arguments are not literals)"
    assert any(literal in n for n in lines)
    assert any(": 7: install.apt_packages" in n for n in lines)
    assert any(n.endswith(": 8: config.jupyter()") for n in lines)
    assert any(": 9: envdlib.tensorboard(8888)" in n for n in lines)
    assert any(": 10: if True:" in n for n in lines)
    assert any(": 12: io.copy(" in n for n in lines)


def test_a_long_call_is_shortened_in_its_note() -> None:
    items = ", ".join(f'"p{i}"' for i in range(100))
    parsed = parse(f"def build():\n    install.vscode_extensions([{items}])\n")
    (note,) = not_taken(parsed)
    assert note.startswith("build.envd: not taken: 2: install.vscode_extensions([")
    assert len(note) < 140 and note.endswith("...")


def test_the_file_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"""open({str(marker)!r}, "w").write("top level ran")
__import__("os").system("touch {marker}")

def build():
    open({str(marker)!r}, "w").write("build ran")
    install.python_packages(name=[__import__("os").system("touch {marker}")])
    base(os="ubuntu22.04", language="python3")
"""
    parsed = parse(text)
    assert not marker.exists()
    assert len(not_taken(parsed)) == 4


def test_recursive_helpers_stop() -> None:
    text = "def build():\n    a()\n\ndef a():\n    b()\n\ndef b():\n    a()\n"
    parsed = parse(text)
    assert any("recursive" in n for n in not_taken(parsed))


def test_deep_nesting_is_refused_or_not_taken_never_a_crash() -> None:
    shallow = "def build():\n    install.python_packages(name=" + "[" * 50 + "]" * 50 + ")\n"
    parsed = parse(shallow)
    assert parsed.requirements == ()
    assert any("install.python_packages" in n for n in not_taken(parsed))
    deep = "def build():\n    install.python_packages(name=" + "[" * 5000 + "]" * 5000 + ")\n"
    with pytest.raises(SpecError) as caught:
        parse(deep)
    assert caught.value.file == f"{ROOT}/build.envd"


def test_a_huge_file_is_refused_and_a_large_one_is_read_quickly() -> None:
    with pytest.raises(SpecError) as caught:
        parse("# x\n" * 300_000)
    assert "too large" in str(caught.value)
    body = "".join(f'    install.apt_packages(name=["p{i}"])\n' for i in range(20_000))
    started = time.monotonic()
    parsed = parse("def build():\n" + body)
    assert len(parsed.system) == 20_000
    assert time.monotonic() - started < 10


def test_many_calls_it_does_not_know_are_counted_not_listed_one_by_one() -> None:
    body = "".join(f"    config.jupyter(port={i})\n" for i in range(30_000))
    started = time.monotonic()
    parsed = parse("def build():\n" + body)
    assert time.monotonic() - started < 10
    assert len(not_taken(parsed)) == 201
    assert not_taken(parsed)[0] == "build.envd: not taken: 2: config.jupyter(port=0)"
    assert "29800 more statements or calls" in not_taken(parsed)[-1]


def test_a_call_after_a_carriage_return_line_is_named_by_its_own_line() -> None:
    parsed = parse('def build():\r\n    shell("zsh")\r    config.jupyter()\n')
    assert not_taken(parsed) == [
        'build.envd: not taken: 2: shell("zsh") (envctl enter runs the image\'s sh)',
        "build.envd: not taken: 3: config.jupyter()",
    ]


def test_helpers_calling_helpers_many_times_stop_at_a_bound() -> None:
    levels = [f"def f{i}():\n" + f"    f{i + 1}()\n" * 50 for i in range(7)]
    text = "def build():\n    f0()\n\n" + "\n".join(levels) + "\ndef f7():\n    shell('zsh')\n"
    started = time.monotonic()
    parsed = parse(text)  # 50**7 calls if followed to the end
    assert time.monotonic() - started < 20
    assert any("stopped after 200000 statements" in w for w in parsed.warnings)


def test_syntax_errors_name_the_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse("def build():\n    install.python_packages(name=[\n")
    assert caught.value.file == f"{ROOT}/build.envd" and "syntax" in str(caught.value)


def test_no_build_function_is_a_warning() -> None:
    parsed = parse('def serve():\n    install.python_packages(["x"])\n')
    assert parsed.requirements == ()
    assert any("no `def build():`" in w for w in parsed.warnings)


def test_bad_values_are_left_out_with_a_warning() -> None:
    text = """def build():
    runtime.environ(env={"PATH": "$PATH:/opt/bin", "1BAD": "x", "OK": "y"})
    install.python_packages(["torch --extra-index-url https://download.pytorch.org/whl/cu116"])
    install.python_packages(["not a requirement!"])
    runtime.expose(envd_port=70000)
"""
    parsed = parse(text)
    assert parsed.env == (("OK", "y"),)
    assert parsed.requirements == ("torch",)
    assert len(parsed.warnings) == 4
    assert parsed.ports == ()
    assert any(": 5: runtime.expose(envd_port=70000)" in n for n in not_taken(parsed))


def test_adopt_writes_the_environment_build_envd_describes() -> None:
    text = """def build():
    base(os="ubuntu20.04", language="python3.11")
    install.python_packages(name=["rich"])
    install.apt_packages(name=["git"])
    runtime.environ(env={"MODE": "dev"})
    runtime.expose(envd_port=8000)
    run(commands=["echo hi"])
    install.cuda(version="12.1")
    config.jupyter()
"""
    result = adopt({"build.envd": text}, "proj")
    assert dict(result.document) == {
        "version": 1,
        "name": "proj",
        "base": {"debian": "bookworm"},
        "python": "3.11",
        "system": ["git"],
        "packages": ["rich"],
        "env": {"MODE": "dev"},
        "setup": ["echo hi"],
        "ports": [8000],
        "gpu": "auto",
        "cuda": "12.1",
    }
    assert result.files == ("build.envd",)
    assert "build.envd: not taken: 9: config.jupyter()" in result.notes


# ---------------------------------------------------------------- cog.yaml


def cog(text: str, files: dict[str, str] | None = None) -> rf.Parsed:
    return rf.parse_cog(text, reader(files or {}), root=ROOT)


def test_cog_without_build_takes_cogs_defaults() -> None:
    parsed = cog('predict: "predict.py:Predictor"\n')
    assert parsed.python == "3.13"
    assert parsed.requirements == ("cog",)
    result = adopt({"cog.yaml": 'predict: "predict.py:Predictor"\n'}, "p")
    assert result.document["base"] == {"debian": "trixie"}
    assert result.document["packages"] == ["cog"]
    assert any("cog's default, Python 3.13" in n for n in result.notes)
    assert any("predict: predict.py:Predictor is cog's; not taken over" in n for n in result.notes)


def test_cog_is_not_added_twice() -> None:
    parsed = cog("build:\n  python_version: '3.11'\n  python_packages: ['cog==0.9.4']\n")
    assert parsed.requirements == ("cog==0.9.4",)
    parsed = cog(
        "build:\n  python_version: '3.11'\n  python_requirements: r.txt\n", {"r.txt": "Cog>=0.9\n"}
    )
    assert parsed.requirements == ()


def test_cog_environment_becomes_env() -> None:
    text = "build:\n  python_version: '3.11'\nenvironment:\n  - NAME=wat\n  - EMPTY=\n  - bad\n"
    parsed = cog(text)
    assert parsed.env == (("NAME", "wat"), ("EMPTY", ""))
    bad = f"{ROOT}/cog.yaml:6: environment: 'bad' is not NAME=value; left out"
    assert parsed.warnings == (bad,)
    assert adopt({"cog.yaml": text}, "p").document["env"] == {"NAME": "wat", "EMPTY": ""}


def test_cog_python_overrides_are_refused_with_the_line_and_the_fix() -> None:
    text = (
        "build:\n  python_version: '3.11'\n  python_requirements: requirements.txt\n"
        "  python_overrides: overrides.txt\n"
    )
    parsed = cog(text, {"requirements.txt": "pillow\n"})
    (warning,) = parsed.warnings
    assert warning.startswith(f"{ROOT}/cog.yaml:4: python_overrides: overrides.txt not taken")
    assert "pin those versions in requirements.txt" in warning
    result = adopt({"cog.yaml": text, "requirements.txt": "pillow\n"}, "p")
    assert "constraints" not in result.document and "overrides" not in result.document


def test_cog_gpu_is_auto_not_required() -> None:
    result = adopt({"cog.yaml": "build:\n  gpu: true\n  python_version: '3.11'\n"}, "p")
    assert result.document["gpu"] == "auto"
    assert any("took gpu: auto from cog.yaml" in n for n in result.notes)


def test_cog_old_environment_section_is_read_as_build() -> None:
    text = "environment:\n  python_version: '3.9'\n  python_packages:\n    - pillow==8.2.0\n"
    parsed = cog(text)
    assert parsed.python == "3.9" and parsed.requirements == ("pillow==8.2.0", "cog")


def test_init_reads_build_envd_and_the_requirements_it_names(tmp_path: Path) -> None:
    from envd.services.adoption import Adoption

    project = tmp_path / "proj"
    (project / "reqs").mkdir(parents=True)
    (project / "build.envd").write_text(
        'def build():\n    install.python_packages(requirements="reqs/dev.txt")\n'
        '    open("ran", "w")\n'
    )
    (project / "reqs" / "dev.txt").write_text("-r base.txt\nrich\n")
    (project / "reqs" / "base.txt").write_text("attrs\n")
    result = Adoption().adopt_into(project)
    assert result is not None
    assert result.files == ("build.envd", "reqs/dev.txt", "reqs/base.txt")
    assert "requirements: reqs/dev.txt" in (project / "envd.yaml").read_text()
    assert 'build.envd: not taken: 3: open("ran", "w")' in result.notes
    assert not (project / "ran").exists()
