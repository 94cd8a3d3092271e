"""envd.gateways.uv without uv: a fake stands in for the one function that runs it."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envd.errors import EnvdError, LockError
from envd.gateways import proc, uv
from envd.model.lockfile import PythonPackage

H = {c: f"sha256:{c * 64}" for c in "abcdef"}

HELP = """\
Compile a `requirements.in` file to a `requirements.txt` or `pylock.toml` file

Options:
      --python-platform <PYTHON_PLATFORM>
          The platform for which requirements should be resolved [possible values: windows, linux,
          macos, x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, x86_64-unknown-linux-musl,
          x86_64-manylinux2014, x86_64-manylinux_2_17, x86_64-manylinux_2_28,
          x86_64-manylinux_2_31, x86_64-manylinux_2_36, x86_64-manylinux_2_40,
          aarch64-manylinux_2_17, aarch64-manylinux_2_28]
      --universal
          Perform a universal resolution
"""

COMPILED = f"""\
PyYAML==6.0.1 \\
    --hash={H["c"]} \\
    --hash={H["a"]}
    # from https://pypi.org/simple
numpy==1.26.4 \\
    --hash={H["b"]}
    # from https://pypi.org/simple
torch==2.3.1+cpu \\
    --hash={H["d"]} \\
    --hash=md5:0123
    # from https://download.pytorch.org/whl/cpu/
"""

CONFLICT = """\
error: No solution found when resolving dependencies
  cause: Because you require numpy<1.20 and numpy>=1.26, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501

NOT_FOUND = """\
error: No solution found when resolving dependencies
  cause: Because envd-no-such-pkg was not found in the package registry and you require envd-no-such-pkg, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501

UNREACHABLE = """\
error: Request failed after 3 retries in 8.3s
  cause: Failed to fetch: http://127.0.0.1:9/simple/numpy/
  cause: error sending request for url (http://127.0.0.1:9/simple/numpy/)
  cause: Connection refused (os error 111)
"""

TLS = """\
error: Request failed after 3 retries
  cause: Failed to fetch: `https://pypi.org/simple/pyyaml/`
  cause: invalid peer certificate: UnknownIssuer
"""


@dataclass
class FakeUv:
    """Answers like uv 0.13 would; records what resolve asked for."""

    output: str = COMPILED
    returncode: int = 0
    stderr: str = ""
    calls: list[list[str]] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    source: str = ""
    preferences: str | None = None
    constraints: str | None = None

    def __call__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        timeout: float,
        cwd: str | None = None,
    ) -> proc.Completed:
        argv = list(argv)
        self.calls.append(argv)
        self.envs.append(dict(env))
        if argv[1:] == ["--version"]:
            return proc.Completed(0, "uv 0.13.9 (x86_64-unknown-linux-gnu)\n", "")
        if argv[1:] == ["pip", "compile", "--help"]:
            return proc.Completed(0, HELP, "")
        assert argv[1:3] == ["pip", "compile"]
        self.source = Path(argv[3]).read_text()
        output = Path(argv[argv.index("-o") + 1])
        self.preferences = output.read_text() if output.exists() else None
        if "-c" in argv:
            self.constraints = Path(argv[argv.index("-c") + 1]).read_text()
        if self.returncode == 0:
            output.write_text(self.output)
        return proc.Completed(self.returncode, "", self.stderr)

    @property
    def argv(self) -> list[str]:
        return self.calls[-1]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeUv]:
    fake = FakeUv()
    monkeypatch.setattr(uv, "_run", fake)
    monkeypatch.setattr(uv, "binary", lambda: "/opt/uv/bin/uv")
    uv._supported_platforms.cache_clear()
    yield fake
    uv._supported_platforms.cache_clear()


def resolve(**kwargs: object) -> tuple[PythonPackage, ...]:
    args: dict[str, object] = {
        "python_version": "3.11.2",
        "platform": "manylinux_2_36_x86_64",
        "indexes": (),
    }
    args.update(kwargs)
    requirements = args.pop("requirements", ("numpy>=1.26", "pyyaml"))
    return uv.resolve(requirements, **args)  # type: ignore[arg-type]


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


# uv_version and platforms


def test_uv_version(fake: FakeUv) -> None:
    assert uv.uv_version() == "0.13.9"


def test_supported_platforms_are_read_from_help(fake: FakeUv) -> None:
    supported = uv._supported_platforms("/opt/uv/bin/uv")
    assert "x86_64-manylinux_2_36" in supported and "aarch64-manylinux_2_28" in supported
    assert "--universal" not in supported


def test_a_narrow_terminal_does_not_change_the_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real uv: under about 90 columns its help lists values one per line, and a shell's
    # COLUMNS=80 made envd read another option's values (every lock then failed).
    monkeypatch.setenv("COLUMNS", "80")
    uv._supported_platforms.cache_clear()
    try:
        supported = uv._supported_platforms(uv.binary())
    finally:
        uv._supported_platforms.cache_clear()
    assert "x86_64-manylinux_2_36" in supported and "first-index" not in supported


SUPPORTED = frozenset(
    {
        "linux",
        "x86_64-unknown-linux-gnu",
        "x86_64-unknown-linux-musl",
        "x86_64-manylinux2014",
        "x86_64-manylinux_2_17",
        "x86_64-manylinux_2_28",
        "x86_64-manylinux_2_36",
        "x86_64-manylinux_2_40",
        "aarch64-manylinux_2_17",
        "aarch64-manylinux_2_28",
    }
)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("manylinux_2_36_x86_64", "x86_64-manylinux_2_36"),
        ("manylinux_2_41_x86_64", "x86_64-manylinux_2_40"),  # newest not newer than the glibc
        ("manylinux_2_31_x86_64", "x86_64-manylinux_2_28"),
        ("manylinux_2_36_aarch64", "aarch64-manylinux_2_28"),
        ("manylinux2014_x86_64", "x86_64-manylinux_2_17"),
        ("musllinux_1_2_x86_64", "x86_64-unknown-linux-musl"),
    ],
)
def test_python_platform_for(tag: str, expected: str) -> None:
    assert uv.python_platform_for(tag, SUPPORTED) == expected


@pytest.mark.parametrize(
    "tag", ["manylinux_2_12_x86_64", "manylinux1_x86_64", "win_amd64", "musllinux_1_2_aarch64"]
)
def test_python_platform_for_refuses_what_uv_cannot_target(tag: str) -> None:
    with pytest.raises(LockError, match="uv cannot resolve for platform") as info:
        uv.python_platform_for(tag, SUPPORTED)
    assert info.value.hint is not None and "x86_64-manylinux_2_40" in info.value.hint


# resolve: the command line


def test_resolve_command_line(fake: FakeUv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_INDEX_URL", "https://elsewhere.test/simple")
    monkeypatch.setenv("UV_HTTP_TIMEOUT", "60")
    resolve(indexes=("https://download.pytorch.org/whl/cpu",))
    argv = fake.argv
    assert argv[:3] == ["/opt/uv/bin/uv", "pip", "compile"]
    assert option(argv, "--python-version") == ["3.11.2"]
    assert option(argv, "--python-platform") == ["x86_64-manylinux_2_36"]
    assert option(argv, "--python") == [sys.executable]
    assert option(argv, "--extra-index-url") == ["https://download.pytorch.org/whl/cpu"]
    for flag in ("--generate-hashes", "--no-header", "--no-annotate", "--emit-index-annotation"):
        assert flag in argv
    for flag in ("--no-config", "--quiet", "--no-progress"):
        assert flag in argv
    assert "--universal" not in argv and "--upgrade" not in argv
    assert fake.source == "numpy>=1.26\npyyaml\n"
    env = fake.envs[-1]
    assert env["UV_NO_PROGRESS"] == "1"
    assert "UV_INDEX_URL" not in env  # a resolution depends on envd.yaml only
    assert env["UV_HTTP_TIMEOUT"] == "60"


def test_resolve_hands_previous_pins_to_uv_as_preferences(fake: FakeUv) -> None:
    resolve(preferences=(PythonPackage("numpy", "1.26.4", (H["a"],)),))
    assert fake.preferences == "numpy==1.26.4\n"


def test_resolve_upgrade_drops_preferences(fake: FakeUv) -> None:
    resolve(preferences=(PythonPackage("numpy", "1.26.4", (H["a"],)),), upgrade=True)
    assert fake.preferences is None
    assert "--upgrade" in fake.argv


def test_resolve_upgrade_packages(fake: FakeUv) -> None:
    resolve(preferences=(PythonPackage("numpy", "1.26.4", (H["a"],)),), upgrade_packages=["numpy"])
    assert fake.preferences == "numpy==1.26.4\n"
    assert option(fake.argv, "--upgrade-package") == ["numpy"]


def test_resolve_cache_dir_and_constraints(fake: FakeUv) -> None:
    resolve(cache_dir="/cache/uv", extra_constraints=["setuptools<70"])
    assert option(fake.argv, "--cache-dir") == ["/cache/uv"]
    assert fake.envs[-1]["UV_CACHE_DIR"] == "/cache/uv"
    assert fake.constraints == "setuptools<70\n"


def test_resolve_uses_the_host_ca_bundle(
    fake: FakeUv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    resolve()
    assert fake.envs[-1]["SSL_CERT_FILE"] == str(bundle)


@pytest.mark.parametrize("bad", ["-r other.txt", "--index-url=https://x.test", "a\nb", " "])
def test_resolve_refuses_options_posing_as_requirements(fake: FakeUv, bad: str) -> None:
    with pytest.raises(LockError, match="not a requirement"):
        resolve(requirements=("numpy", bad))
    assert fake.calls == []


# resolve: the output


def test_resolve_parses_pins_hashes_and_indexes(fake: FakeUv) -> None:
    packages = resolve(indexes=("https://download.pytorch.org/whl/cpu",))
    assert packages == (
        PythonPackage("numpy", "1.26.4", (H["b"],)),
        PythonPackage("pyyaml", "6.0.1", (H["a"], H["c"])),
        PythonPackage("torch", "2.3.1+cpu", (H["d"],), "https://download.pytorch.org/whl/cpu"),
    )


def test_parse_compiled_without_index_annotations() -> None:
    text = f"numpy==1.26.4 \\\n    --hash={H['b']}\n    # via -r requirements.in\n"
    assert uv.parse_compiled(text) == (PythonPackage("numpy", "1.26.4", (H["b"],)),)


def test_a_package_without_sha256_is_an_error(fake: FakeUv) -> None:
    fake.output = "numpy==1.26.4 \\\n    --hash=md5:0123\n    # from https://pypi.org/simple\n"
    with pytest.raises(LockError, match=r"no sha256 hash for numpy==1\.26\.4"):
        resolve()


def test_a_direct_url_cannot_be_locked(fake: FakeUv) -> None:
    fake.output = f"foo @ https://x.test/foo-1.0.tar.gz \\\n    --hash={H['a']}\n"
    with pytest.raises(LockError, match="only packages from an index can be locked"):
        resolve()


# resolve: errors


def test_a_conflict_names_the_package_and_uvs_reason(fake: FakeUv) -> None:
    fake.returncode, fake.stderr = 1, CONFLICT
    with pytest.raises(LockError) as info:
        resolve(requirements=("numpy<1.20", "numpy>=1.26", "pyyaml"))
    message = info.value.message
    assert message.startswith("cannot resolve numpy for Python 3.11.2 on manylinux_2_36_x86_64:")
    assert "  Because you require numpy<1.20 and numpy>=1.26" in message
    assert "pyyaml" not in message.splitlines()[0]
    assert info.value.hint is not None and "envd.yaml" in info.value.hint


def test_an_unknown_package_is_named(fake: FakeUv) -> None:
    fake.returncode, fake.stderr = 1, NOT_FOUND
    with pytest.raises(LockError, match="cannot resolve envd-no-such-pkg for") as info:
        resolve(requirements=("envd_no_such_pkg",))
    assert "was not found in the package registry" in info.value.message
    assert info.value.hint is not None and "package name" in info.value.hint


def test_a_long_explanation_is_trimmed(fake: FakeUv) -> None:
    fake.returncode = 1
    fake.stderr = CONFLICT + "".join(f"         line {i}\n" for i in range(100))
    with pytest.raises(LockError) as info:
        resolve(requirements=("numpy<1.20", "numpy>=1.26"))
    assert "more lines)" in info.value.message
    assert len(info.value.message.splitlines()) < 40


def test_an_unreachable_index_is_named(fake: FakeUv) -> None:
    fake.returncode, fake.stderr = 2, UNREACHABLE
    with pytest.raises(LockError) as info:
        resolve(indexes=("http://127.0.0.1:9/simple",))
    assert info.value.message.startswith(
        "package index http://127.0.0.1:9/simple cannot be reached:"
    )
    assert "Connection refused" in info.value.message


def test_unreachable_pypi_hints_at_the_ca_bundle(fake: FakeUv) -> None:
    fake.returncode, fake.stderr = 2, TLS
    with pytest.raises(LockError, match=r"https://pypi.org/simple \(PyPI\) cannot be reached"):
        resolve()


def test_any_other_failure_shows_uvs_message(fake: FakeUv) -> None:
    fake.returncode, fake.stderr = 2, "error: Failed to build `foo==1.0`\n  cause: boom\n"
    with pytest.raises(LockError, match=r"uv pip compile failed for Python 3\.11\.2") as info:
        resolve()
    assert "boom" in info.value.message


# finding uv


def test_missing_uv_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uv", None)  # the uv package is not installed
    monkeypatch.setattr(uv.shutil, "which", lambda name: None)
    with pytest.raises(EnvdError, match="uv is not installed") as info:
        uv.binary()
    assert not isinstance(info.value, LockError)
    assert info.value.hint is not None and "pip install uv" in info.value.hint


def test_a_vanished_uv_binary_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(EnvdError, match="uv is not installed") as info:
        uv._run([str(tmp_path / "uv"), "--version"], env={}, timeout=5)
    assert info.value.hint is not None and "pip install uv" in info.value.hint


def test_the_packaged_uv_is_found() -> None:
    assert Path(uv.binary()).name == "uv"
