"""setup.py's computed metadata, made by the PEP 517 legacy backend in a throwaway container.

A setup.py whose install_requires or version is computed when it runs (read from
requirements.txt, a regex over a file, `**kwargs`) cannot be read with `ast`, and project code
is untrusted: it never runs on the host. At `envctl lock`, envd copies the project's source
files (no hidden files, nothing over the bounds below) into a temporary folder, mounts it
read-only into a container of the project's base image (no network, an unprivileged user,
labelled, removed however it ends, time-bounded), copies it to a scratch folder there and runs
`setuptools.build_meta:__legacy__.prepare_metadata_for_build_wheel` with the base's setuptools
(or the setuptools wheel Debian's python3-venv ships, which the locked base pins). The
container prints one marked line of JSON: METADATA's headers, entry_points.txt, the
setuptools version and the project files setup.py opened. The output is bounded here, and
parsed by envd.model.setupmeta.parse_metadata.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from envd.errors import EnvdError, LockError
from envd.gateways.engine import Engine, Mount
from envd.model import names
from envd.model.setupmeta import (
    LEGACY_BACKEND,
    MAX_METADATA_BYTES,
    ComputedMetadata,
    MetadataError,
    parse_metadata,
)

TIMEOUT_S = 120.0
MAX_FILE_BYTES = 1024 * 1024
MAX_FILES = 2000
MAX_TOTAL_BYTES = 32 * 1024 * 1024
_MAX_LINE = 2 * MAX_METADATA_BYTES
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
_TAIL_LINES = 20
_SKIP_DIRS = frozenset(
    ("__pycache__", "node_modules", "build", "dist", "venv", "env", "site-packages")
)
_SOURCE_SUFFIXES = (".py", ".txt", ".cfg", ".toml", ".in", ".md", ".rst", ".json", ".ini")
PROJECT_MOUNT = "/envd-project"

# Run with `python3 -I -c SCRIPT NONCE` as an unprivileged user; prints one line
# "ENVD-SETUP-METADATA NONCE {json}" (or exits non-zero with the reason on stderr).
SCRIPT = r"""
import builtins, glob, io, json, os, shutil, sys, zipfile
nonce = sys.argv[1]
src, work, out = "/envd-project", "/tmp/envd-project", "/tmp/envd-metadata"
shutil.copytree(src, work)
os.makedirs(out)
try:
    import setuptools
except ImportError:
    wheels = sorted(glob.glob("/usr/share/python-wheels/setuptools-*.whl"))
    if not wheels:
        print("ENVD-NO-SETUPTOOLS", flush=True)
        sys.exit(3)
    zipfile.ZipFile(wheels[-1]).extractall("/tmp/envd-setuptools")
    sys.path.insert(0, "/tmp/envd-setuptools")
    import setuptools
read = set()
_open = io.open
def traced(file, mode="r", *args, **kwargs):
    try:
        path = os.path.abspath(os.fsdecode(file))
        if path.startswith(work + "/") and not any(c in mode for c in "wax+"):
            read.add(path[len(work) + 1:])
    except TypeError:
        pass
    return _open(file, mode, *args, **kwargs)
builtins.open = traced
io.open = traced
os.chdir(work)
sys.path.insert(0, work)
sys.argv = ["setup.py"]
from setuptools import build_meta
stdout = sys.stdout
sys.stdout = sys.stderr
def text(folder, relpath):
    path = os.path.join(out, folder, relpath)
    if not os.path.isfile(path):
        return ""
    with _open(path, encoding="utf-8", errors="replace") as f:
        data = f.read(600000)
    return data
via = "prepare_metadata_for_build_wheel"
try:
    name = build_meta.__legacy__.prepare_metadata_for_build_wheel(out)
    head = text(name, "METADATA").split("\n\n", 1)[0]
except (Exception, SystemExit):
    # setuptools before 70.1 turns egg-info into dist-info with `wheel`'s bdist_wheel; the
    # egg-info its egg_info step wrote first says the same (PKG-INFO, requires.txt)
    infos = glob.glob(os.path.join(out, "*.egg-info"))
    if len(infos) != 1 or not os.path.isfile(os.path.join(infos[0], "PKG-INFO")):
        raise
    name, via = os.path.basename(infos[0]), "egg_info"
    lines = [l for l in text(name, "PKG-INFO").split("\n\n", 1)[0].splitlines()
             if not l.lower().startswith("requires-dist:")]
    section = ""
    for line in text(name, "requires.txt").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        extra, _, marker = section.partition(":")
        if extra:
            continue  # an optional extra
        lines.append("Requires-Dist: " + line + (" ; " + marker if marker else ""))
    head = "\n".join(lines)
sys.stdout = stdout
for module in list(sys.modules.values()):
    where = getattr(module, "__file__", None) or ""
    if where.startswith(work + "/"):
        read.add(where[len(work) + 1:])
result = {
    "metadata": head,
    "entry_points": text(name, "entry_points.txt")[:200000],
    "via": via,
    "setuptools": setuptools.__version__,
    "read": sorted(r for r in read if not r.split("/")[0].endswith(".egg-info"))[:500],
}
print("ENVD-SETUP-METADATA", nonce, json.dumps(result), flush=True)
"""


_EXIT = "ENVD-EXIT "


def argv(nonce: str, timeout: float) -> list[str]:
    """The container's command: `timeout` is its first process (which nothing inside may
    signal), so setup.py ends after `timeout` seconds (killed 5 s later) and the container with
    it, whatever it forks; its output is cut at MAX_OUTPUT_BYTES in the container (the engine
    gateway's reader holds a line whole), and python's exit status is its last line."""
    pipeline = f'{{ python3 -I -c "$0" "$1" 2>&1; echo "{_EXIT}$?"; }} | head -c {MAX_OUTPUT_BYTES}'
    return ["timeout", "-k", "5", str(int(timeout)), "sh", "-c", pipeline, SCRIPT, nonce]


def _exit_code(tail: list[str], engine_code: int) -> int:
    """python's exit status (the container's when the output was cut or it timed out)."""
    for line in reversed(tail):
        if line.startswith(_EXIT) and line[len(_EXIT) :].strip().isdigit():
            return engine_code or int(line[len(_EXIT) :].strip())
    return engine_code


@dataclass(frozen=True)
class Computed:
    """What the container computed, and the project files setup.py opened that envd.lock does
    not hash (a change to them would not make the lock stale)."""

    metadata: ComputedMetadata
    unwatched: tuple[str, ...] = ()


class SetupMetadataFailed(LockError):
    """The legacy backend could not compute the metadata (setup.py failed, no setuptools)."""


def source_files(project_dir: Path) -> Iterator[tuple[str, Path]]:
    """The project files the container gets (relpath, path): source and text files a setup.py
    reads, no hidden files or folders (.git, .env, .venv), no links, bounded in number and size."""
    count = total = 0
    for folder, dirs, files in os.walk(project_dir):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not d.endswith(".egg-info")
            and not os.path.islink(os.path.join(folder, d))
        )
        top = Path(folder) == project_dir
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            if not top and not name.endswith(_SOURCE_SUFFIXES):
                continue
            size = path.stat().st_size
            if size > MAX_FILE_BYTES or count >= MAX_FILES or total + size > MAX_TOTAL_BYTES:
                continue
            count, total = count + 1, total + size
            yield path.relative_to(project_dir).as_posix(), path


def compute(
    engine: Engine,
    image: str,
    project_dir: Path,
    scratch: Path,
    *,
    project: str,
    watched: tuple[str, ...],
    timeout: float = TIMEOUT_S,
) -> Computed:
    """Run the legacy backend on a copy of the project in a container of `image` (the base);
    `watched`: the "relpath sha256:<hex>" the lock's inputs hash (recorded with the result)."""
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="setup-", dir=scratch))
    try:
        copy = folder / "project"
        copy.mkdir()
        for relpath, path in source_files(project_dir):
            target = copy / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        for root, _dirs, files in os.walk(folder):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)
        return _run(engine, image, copy, project, watched, timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(
    engine: Engine, image: str, copy: Path, project: str, watched: tuple[str, ...], timeout: float
) -> Computed:
    nonce = secrets.token_hex(8)
    marker = f"ENVD-SETUP-METADATA {nonce} "
    found: list[str] = []
    tail: list[str] = []

    def collect(line: str) -> None:
        if line.startswith(marker) and len(line) <= _MAX_LINE:
            found[:] = [line[len(marker) :]]
            return
        tail.append(line[:500])
        del tail[:-_TAIL_LINES]

    try:
        result = engine.run(
            image,
            argv(nonce, timeout),
            mounts=[Mount(str(copy), PROJECT_MOUNT, read_only=True)],
            network=False,
            user="65534:65534",
            labels={names.ROLE_LABEL: names.ROLE_STEP, names.PROJECT_LABEL: project},
            on_output=collect,
            timeout=timeout,
        )
    except EnvdError as exc:
        raise SetupMetadataFailed(
            f"{project}: running setup.py's legacy backend in a container failed: {exc}",
            hint="check that the engine answers, then run `envctl lock` again",
        ) from exc
    code = _exit_code(tail, result.exit_code)
    if "ENVD-NO-SETUPTOOLS" in tail:
        raise SetupMetadataFailed(
            f"{project}: setup.py's metadata is computed when it runs, and the base image has "
            "no setuptools to run it with (envd runs it in a container of the base, never on "
            "the host)",
            hint="use a base with setuptools (a python:3.11 image, or `base: {debian: ...}`, "
            "whose python3-venv ships its wheel), or write the metadata literally in "
            "setup.cfg [metadata]/[options] or pyproject.toml [project]",
        )
    if code != 0 or not found:
        said = "\n".join(line for line in tail[-10:] if not line.startswith(_EXIT))
        why = (
            "timed out"
            if code in (124, 137)
            else f"exit {code}"
            if code
            else f"no metadata in its first {MAX_OUTPUT_BYTES // 1024 // 1024} MiB of output"
        )
        raise SetupMetadataFailed(
            f"{project}: setup.py failed in the container that computes its metadata "
            f"({LEGACY_BACKEND}, no network, {why}):\n{said}",
            hint="fix setup.py so that `python setup.py egg_info` works from a clean copy of "
            "the project without network, or write the metadata literally in setup.cfg or "
            "pyproject.toml [project]",
        )
    return _parse(found[0], project, watched)


def _parse(payload: str, project: str, watched: tuple[str, ...]) -> Computed:
    try:
        data = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        metadata = parse_metadata(str(data.get("metadata", "")), str(data.get("entry_points", "")))
    except (ValueError, RecursionError, MetadataError) as exc:
        raise SetupMetadataFailed(
            f"{project}: the metadata setup.py computed cannot be read: {exc}",
            hint="run `python setup.py egg_info` and check its PKG-INFO",
        ) from None
    version = str(data.get("setuptools", ""))[:40]
    via = str(data.get("via", ""))[:40]
    read = data.get("read")
    hashed = {entry.rsplit(" ", 1)[0] for entry in watched}
    unwatched = tuple(
        sorted(str(r) for r in read if isinstance(r, str) and r not in hashed)
        if isinstance(read, list)
        else ()
    )
    said = ", ".join(x for x in (f"setuptools {version}" if version else "", via) if x)
    backend = f"{LEGACY_BACKEND} ({said})" if said else LEGACY_BACKEND
    return Computed(replace(metadata, backend=backend, files=watched), unwatched[:50])
