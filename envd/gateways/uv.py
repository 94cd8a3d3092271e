"""uv: the only module that runs it. Resolves Python requirements for a target, on the host.

`resolve` runs `uv pip compile` for the target's Python version and platform (read from the base
image), never in a container, so a lock needs no Docker. Previous pins are handed to uv as an
existing output file, which uv treats as preferences: a pin that still fits is kept.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envd.errors import EnvdError, LockError, Unresolvable
from envd.gateways import proc
from envd.gateways.trust import host_ca_bundle
from envd.model.lockfile import PythonPackage
from envd.model.plan import binary_args

PYPI_SIMPLE = "https://pypi.org/simple"
_PYPI_HOSTS = frozenset({"pypi.org", "files.pythonhosted.org"})
RESOLVE_TIMEOUT_S = 900.0
_INSTALL_HINT = "install it with `pip install uv` in envd's environment, or put `uv` on the PATH"
# UV_* variables kept from the daemon's environment: they tune transport, not the resolution.
_UV_ENV_KEPT = frozenset(
    {"UV_CACHE_DIR", "UV_HTTP_TIMEOUT", "UV_HTTP_RETRIES", "UV_CONCURRENT_DOWNLOADS"}
)
_MANYLINUX = re.compile(r"manylinux_(\d+)_(\d+)_(\w+)")
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MAX_EXPLANATION_LINES = 30


def uv_version() -> str:
    """The version of the uv that `resolve` runs, e.g. "0.13.9" (asked once per binary)."""
    uv = binary()
    try:
        changed = os.stat(uv).st_mtime_ns
    except OSError:
        changed = 0
    return _version_of(uv, changed)


@functools.lru_cache(maxsize=4)
def _version_of(uv: str, changed: int) -> str:
    """`uv --version` of the binary at `uv` as it was at mtime `changed`."""
    result = _run([uv, "--version"], env=_uv_env(None), timeout=60)
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) < 2 or parts[0] != "uv":
        raise EnvdError(f"`uv --version` failed: {_tail(result.stderr or result.stdout)}")
    return parts[1]


def resolve(
    requirements: Sequence[str],
    *,
    python_version: str,
    platform: str,
    indexes: Sequence[str],
    preferences: Sequence[PythonPackage] = (),
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    cache_dir: str | None = None,
    extra_constraints: Sequence[str] = (),
    from_source: Sequence[str] = (),
    direct: Mapping[str, PythonPackage] | None = None,
) -> tuple[PythonPackage, ...]:
    """Resolve `requirements` to exact versions and sha256 hashes for one Python and platform.

    `platform` is a wheel platform tag such as "manylinux_2_36_x86_64". `preferences` (the
    previous lock) are kept where they still satisfy the requirements, except for
    `upgrade_packages`, or all of them with `upgrade`. Only wheels are taken, except for the
    packages in `from_source`, so a package with no wheel for the target is named here, at
    lock time, never built by accident.

    `direct`: the direct URL packages, by canonical name, as locked (URL, version, sha256);
    `requirements` name their verified local copies (`name @ file:///...`), so uv reads
    their dependencies from exactly those files.
    """
    for line in (*requirements, *extra_constraints):
        if not line.strip() or line.lstrip().startswith("-") or "\n" in line:
            raise LockError(f"not a requirement: {line!r}")
    if not python_version or not platform:
        raise LockError("the target's Python version and platform are needed to resolve")
    uv = binary()
    target = python_platform_for(platform, _supported_platforms(uv))
    with tempfile.TemporaryDirectory(prefix="envd-uv-") as tmp:
        work = Path(tmp)
        source = work / "requirements.in"
        output = work / "requirements.txt"
        source.write_text("".join(f"{r}\n" for r in requirements), encoding="utf-8")
        if not upgrade:
            output.write_text(
                "".join(f"{p.name}=={p.version}\n" for p in preferences if not p.url),
                encoding="utf-8",
            )
        argv = [uv, "pip", "compile", str(source), "-o", str(output)]
        argv += ["--python-version", python_version, "--python-platform", target]
        if sys.executable:  # only builds sdists; the target version comes from --python-version
            argv += ["--python", sys.executable]
        argv += ["--generate-hashes", "--emit-index-annotation", "--no-header", "--no-annotate"]
        argv += ["--no-config", "--no-progress", "--quiet", "--color", "never"]
        argv += binary_args(from_source)
        for index in indexes:
            argv += ["--extra-index-url", index]
        if extra_constraints:
            constraints = work / "constraints.txt"
            constraints.write_text("".join(f"{c}\n" for c in extra_constraints), "utf-8")
            argv += ["-c", str(constraints)]
        if upgrade:
            argv.append("--upgrade")
        for name in upgrade_packages:
            argv += ["--upgrade-package", name]
        if cache_dir is not None:
            argv += ["--cache-dir", cache_dir]
        result = _run(argv, env=_uv_env(cache_dir), cwd=tmp, timeout=RESOLVE_TIMEOUT_S)
        if result.returncode != 0:
            raise _resolve_error(
                result.stderr, requirements, indexes, f"Python {python_version} on {platform}"
            )
        return parse_compiled(output.read_text(encoding="utf-8"), indexes, direct)


def python_platform_for(platform_tag: str, supported: Collection[str]) -> str:
    """The `--python-platform` value for a wheel platform tag, given what this uv accepts.

    manylinux_2_36_x86_64 -> x86_64-manylinux_2_36 when uv knows it; otherwise the newest
    manylinux uv knows that is not newer than the target's glibc (wheels for an older glibc
    still run), never a newer one.
    """
    tag = platform_tag.strip()
    arch = ""
    glibc: tuple[int, int] | None = None
    if match := _MANYLINUX.fullmatch(tag):
        glibc, arch = (int(match[1]), int(match[2])), match[3]
    else:
        legacy, _, arch = tag.partition("_")
        if legacy in _LEGACY_MANYLINUX and arch:
            glibc = _LEGACY_MANYLINUX[legacy]
        elif tag.startswith("musllinux_"):
            arch = tag.split("_", 3)[-1]
            if f"{arch}-unknown-linux-musl" in supported:
                return f"{arch}-unknown-linux-musl"
    if glibc is not None:
        candidates = [
            (version, name)
            for name in supported
            if (version := _manylinux_version(name, arch)) is not None and version <= glibc
        ]
        if candidates:
            return max(candidates)[1]
    raise LockError(
        f"uv cannot resolve for platform {platform_tag!r}",
        hint=f"this uv supports: {', '.join(sorted(s for s in supported if '-' in s))}",
    )


def parse_compiled(
    text: str, indexes: Sequence[str] = (), direct: Mapping[str, PythonPackage] | None = None
) -> tuple[PythonPackage, ...]:
    """Packages from `uv pip compile --generate-hashes --emit-index-annotation` output.

    A `name @ file:///...` line is one of the `direct` URL packages, taken as locked."""
    entries: list[tuple[str, str, list[str], str]] = []
    taken: list[PythonPackage] = []
    for raw in text.splitlines():
        line = raw.rstrip().removesuffix("\\").strip()
        if not line or (line.startswith("#") and not raw[:1].isspace()):
            continue
        if not raw[:1].isspace() and " @ " in line:
            named = canonicalize_name(line.split(" @ ", 1)[0].split("[", 1)[0].strip())
            if direct and named in direct:
                taken.append(direct[named])
                entries.append((named, "", ["direct"], "direct"))  # its --hash lines follow
                continue
        if not raw[:1].isspace():
            name, version = _pin(line)
            entries.append((name, version, [], ""))
        elif not entries:
            raise LockError(f"unexpected line in uv's output: {raw!r}")
        elif line.startswith("--hash="):
            entries[-1][2].append(line.removeprefix("--hash="))
        elif line.startswith("# from ") and entries[-1][3] != "direct":
            name, version, hashes, _ = entries[-1]
            entries[-1] = (name, version, hashes, _index_name(line[7:].strip(), indexes))
    packages = list(taken)
    for name, version, hashes, index in entries:
        if index == "direct":
            continue
        sha256 = sorted({h for h in hashes if re.fullmatch(r"sha256:[0-9a-f]{64}", h)})
        if not sha256:
            where = index or PYPI_SIMPLE
            raise LockError(f"no sha256 hash for {name}=={version} from {where}")
        packages.append(PythonPackage(name, version, tuple(sha256), index))
    return tuple(sorted(packages, key=lambda p: p.name))


def _pin(line: str) -> tuple[str, str]:
    requirement = line.split(";", 1)[0].strip()
    name, sep, version = requirement.partition("==")
    if not sep or " @ " in requirement or not name.strip() or not version.strip():
        raise LockError(
            f"cannot lock {requirement!r}: only packages from an index can be locked",
            hint="replace direct URL, path or VCS requirements with a package from an index",
        )
    return canonicalize_name(name.split("[", 1)[0].strip()), version.strip()


def _index_name(url: str, indexes: Sequence[str]) -> str:
    """The index as configured ("" for PyPI), for an index URL printed by uv."""
    if url.rstrip("/") == PYPI_SIMPLE:
        return ""
    for index in indexes:
        if index.rstrip("/") == url.rstrip("/"):
            return index
    return url


_NO_WHEEL = re.compile(r"Because (\S+?)(?:==(\S+))? has no usable wheels")


def _resolve_error(
    stderr: str, requirements: Sequence[str], indexes: Sequence[str], target: str
) -> LockError:
    explanation = _explanation(stderr)
    if match := _NO_WHEEL.search(stderr):
        name, version = match[1], match[2]
        pinned = f"{name}=={version}" if version else name
        return Unresolvable(
            f"{pinned} has no wheel for {target}; envd builds nothing from source unless "
            f"envd.yaml says so:\n{explanation}",
            hint=f"pick a version of {name} with a wheel for this target, or add "
            f"`build: {{from_source: [{name}]}}` to envd.yaml (with a compiler in `system:`, "
            "e.g. build-essential) and run `envctl lock` again",
            pin=pinned,
        )
    if "No solution found" not in stderr and (url := _failed_url(stderr)):
        index = _index_of_url(url, indexes)
        return LockError(
            f"package index {index} cannot be reached:\n{explanation}",
            hint="check the URL in `indexes` and the network; behind a TLS-intercepting proxy "
            "set SSL_CERT_FILE to its CA bundle",
        )
    if "No solution found" in stderr:
        names = [n for n in _requirement_names(requirements) if _mentions(stderr, n)]
        what = ", ".join(names) if names else "the Python requirements"
        hint = "change the conflicting requirements in envd.yaml, then run `envctl lock` again"
        if "not found in the package registry" in stderr:
            hint = "check the package name, or add the index that has it to `indexes`"
        return Unresolvable(f"cannot resolve {what} for {target}:\n{explanation}", hint=hint)
    return LockError(f"uv pip compile failed for {target}:\n{explanation}")


def _index_of_url(url: str, indexes: Sequence[str]) -> str:
    for index in indexes:
        if url.startswith(index.rstrip("/")):
            return index
    host = urlsplit(url).hostname or url
    if host in _PYPI_HOSTS:
        return f"{PYPI_SIMPLE} (PyPI)"
    return host


def _requirement_names(requirements: Sequence[str]) -> list[str]:
    names: list[str] = []
    for line in requirements:
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement:
            continue
        if name not in names:
            names.append(name)
    return names


def _mentions(text: str, canonical_name: str) -> bool:
    pattern = "[-_.]+".join(re.escape(part) for part in canonical_name.split("-"))
    return re.search(rf"(?<![\w.-]){pattern}(?![\w-])", text, re.IGNORECASE) is not None


def _failed_url(stderr: str) -> str | None:
    match = re.search(r"Failed to fetch:? `?(\S+?)`?$", stderr, re.MULTILINE)
    return match[1] if match else None


def _explanation(stderr: str) -> str:
    """uv's own lines, without its prefixes, trimmed to a readable length."""
    lines = [
        re.sub(r"^(error: |  cause: |         )", "", line.rstrip())
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("error: No solution found")
    ]
    if len(lines) > _MAX_EXPLANATION_LINES:
        more = len(lines) - _MAX_EXPLANATION_LINES
        lines = [*lines[:_MAX_EXPLANATION_LINES], f"... ({more} more lines)"]
    return "\n".join(f"  {line}" for line in lines)


def _manylinux_version(platform: str, arch: str) -> tuple[int, int] | None:
    if platform == f"{arch}-manylinux2014":
        return (2, 17)
    match = re.fullmatch(rf"{re.escape(arch)}-manylinux_(\d+)_(\d+)", platform)
    return (int(match[1]), int(match[2])) if match else None


@functools.lru_cache(maxsize=4)
def _supported_platforms(uv: str) -> frozenset[str]:
    """The `--python-platform` values this uv binary accepts, read from its help."""
    # Wide: under about 90 columns clap lists the values one per line, and the first
    # "[possible values: ...]" is then another option's (a shell's COLUMNS=80 broke every lock).
    env = {**_uv_env(None), "COLUMNS": "1000"}
    result = _run([uv, "pip", "compile", "--help"], env=env, timeout=60)
    match = re.search(
        r"--python-platform\b.*?\[possible values: ([^\]]*)\]", result.stdout, re.DOTALL
    )
    if result.returncode != 0 or match is None:
        raise EnvdError(f"cannot read the platforms uv supports: {_tail(result.stderr)}")
    return frozenset(p for p in re.split(r"[,\s]+", match[1]) if p)


def binary() -> str:
    """The uv executable envd uses for locking and building (the `uv` package's own first)."""
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise EnvdError(
            "uv is not installed; envd needs it to resolve Python packages", hint=_INSTALL_HINT
        )
    return found


def _uv_env(cache_dir: str | None) -> dict[str, str]:
    """The daemon's environment without UV_* settings that would change a resolution."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_") or k in _UV_ENV_KEPT}
    env["UV_NO_PROGRESS"] = "1"
    if cache_dir is not None:
        env["UV_CACHE_DIR"] = cache_dir
    if bundle := host_ca_bundle():
        env["SSL_CERT_FILE"] = bundle  # read by every uv version; --native-tls is deprecated
    return env


def _run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: str | None = None,
) -> proc.Completed:
    """Run uv and capture its output (through the one host-program gateway)."""
    try:
        return proc.run(argv, env=env, cwd=cwd, timeout=timeout, check=False)
    except proc.CommandError as exc:  # only a timeout: check=False keeps failures as results
        raise LockError(f"uv did not finish within {timeout:.0f} s: {' '.join(argv[1:4])}") from exc
    except EnvdError as exc:
        raise EnvdError(f"uv is not installed ({argv[0]} not found)", hint=_INSTALL_HINT) from exc


def _tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
