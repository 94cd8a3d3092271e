"""conda environment.yml."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

import yaml
from packaging.requirements import InvalidRequirement, Requirement

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    _Acc,
    _checked,
    _error,
    _pin_of,
    _requirement,
    line_of,
    shown,
)
from envd.model.reqfiles.requirements_txt import _RequirementsReader

CONDA_ONLY: Mapping[str, str | None] = {
    "gcc": "gcc",
    "gxx": "g++",
    "gcc_linux-64": "gcc",
    "gxx_linux-64": "g++",
    "c-compiler": "gcc",
    "cxx-compiler": "g++",
    "compilers": "build-essential",
    "make": "make",
    "cmake": "cmake",
    "git": "git",
    "libgomp": "libgomp1",
    "libgfortran": "libgfortran5",
    "libgfortran-ng": "libgfortran5",
    "libgfortran5": "libgfortran5",
    "gfortran": "gfortran",
    "fortran-compiler": "gfortran",
    "_openmp_mutex": "libgomp1",
    "openblas": "libopenblas0",
    "libopenblas": "libopenblas0",
    "ffmpeg": "ffmpeg",
    "graphviz": "graphviz",
    "nodejs": "nodejs",
    "openjdk": "default-jdk",
    "r-base": "r-base",
    "curl": "curl",
    "wget": "wget",
    "unzip": "unzip",
    "zlib": "zlib1g",
    "libffi": "libffi8",
    "openssl": "openssl",
    "sqlite": "sqlite3",
    "hdf5": "libhdf5-dev",
    "gdal": "gdal-bin",
    "libgdal": "libgdal-dev",
    "proj": "proj-bin",
    "geos": "libgeos-dev",
    "pandoc": "pandoc",
    "mkl": None,
    "cudatoolkit": None,
    "cudnn": None,
    "nccl": None,
    "libstdcxx-ng": None,
    "libgcc-ng": None,
}
# conda package names that differ on PyPI.
CONDA_TO_PYPI: Mapping[str, str] = {
    "pytorch": "torch",
    "pytorch-cpu": "torch",
    "py-xgboost": "xgboost",
    "pytables": "tables",
    "matplotlib-base": "matplotlib",
    "pyqt": "PyQt5",
    "tensorflow-base": "tensorflow",
    "msgpack-python": "msgpack",
    "python-graphviz": "graphviz",
    "pyyaml": "PyYAML",
}
_CONDA_SPEC = re.compile(
    r"^(?:(?P<channel>[A-Za-z0-9_.-]+)::)?(?P<name>[A-Za-z0-9_.-]+)\s*(?P<version>[^\s]*)"
    r"(?:\s+(?P<build>\S+))?$"
)


def conda_version(version: str) -> str:
    """A conda match-spec version (`=1.26`, `1.26.*`, `>=1,<2`, `==1.2`) as PEP 440."""
    version = version.strip()
    if not version:
        return ""
    if version.startswith("=") and not version.startswith("=="):
        version = version[1:]
        version = version.split("=", 1)[0]  # drop a build string
        return f"=={version}" if version.endswith("*") else f"=={version}.*"
    if re.match(r"^[0-9]", version):
        return f"=={version}"
    return version


@_checked
def parse_environment_yml(
    text: str, path: str = "environment.yml", *, root: str = "", read: Read | None = None
) -> Parsed:
    """conda environment.yml: python from `python=3.x`, the `pip:` list, PyPI-known packages.

    `-r FILE` in the pip: list is read through `read` (relative to environment.yml) and checked;
    it is named in `requirement_files`, its requirements not merged.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise _error(
            root,
            path,
            f"YAML syntax error: {exc.problem}",
            mark.line + 1 if mark else None,
            "check indentation (spaces, not tabs)",
        ) from None
    except yaml.YAMLError as exc:  # a control character (ReaderError) has no mark
        raise _error(root, path, f"YAML syntax error: {exc}", None) from None
    if not isinstance(data, dict):
        raise _error(root, path, "expected a mapping with `dependencies:`", 1)
    acc = _Acc(source=path, format="environment.yml")
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise _error(root, path, "`dependencies` must be a list", line_of(text, "dependencies"))
    conda_only: list[tuple[str, str | None, int | None]] = []
    moved: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            pip = dep.get("pip")
            if not isinstance(pip, list):
                raise _error(root, path, f"unexpected entry {dep!r} in dependencies", None)
            for item in pip:
                line = line_of(text, str(item))
                text_item = str(item).strip()
                if text_item.startswith(("-r ", "--requirement ", "--requirement=")):
                    _pip_include_in_conda(acc, text_item, path, root, read, line)
                    continue
                if text_item.startswith("-"):
                    _pip_option_in_conda(acc, text_item, path, root, line)
                    continue
                req = _requirement(text_item, root, path, line, "PEP 508, e.g. `numpy>=1.26`")
                acc.requirements.append(str(req))
                pin = _pin_of(req)
                if pin:
                    acc.pins.append(pin)
            continue
        line = line_of(text, str(dep))
        match = _CONDA_SPEC.match(str(dep).strip())
        if not match:
            raise _error(root, path, f"`{dep}` is not a conda package spec", line)
        name = match.group("name").lower()
        version = match.group("version") or ""
        if name == "python":
            acc.python = _conda_python(version)
            continue
        if name == "pip":
            continue
        if name in CONDA_ONLY:
            conda_only.append((name, CONDA_ONLY[name], line))
            continue
        pypi = CONDA_TO_PYPI.get(name, name)
        try:
            spec = conda_version(version)
            req = Requirement(f"{pypi}{spec}")
        except InvalidRequirement:
            raise _error(
                root,
                path,
                f"`{dep}`: cannot read the conda version `{version}`",
                line,
                "write it as `name>=1.2` or move it to the `pip:` list",
            ) from None
        acc.requirements.append(str(req))
        pin = _pin_of(req)
        if pin:
            acc.pins.append(pin)
        moved.append(str(req) if pypi == name else f"{req!s} (conda `{name}`)")
    if conda_only:
        _conda_only_error(conda_only, path, root)
    if moved:
        acc.notes.append(
            f"{shown(root, path)}: conda packages taken from PyPI instead: {', '.join(moved)}"
        )
    if data.get("channels"):
        acc.notes.append(f"{shown(root, path)}: channels ({', '.join(data['channels'])}) not used")
    return acc.freeze()


def _pip_include_in_conda(
    acc: _Acc, item: str, path: str, root: str, read: Read | None, line: int | None
) -> None:
    target = re.split(r"[ =]", item, maxsplit=1)[1].strip().removeprefix("file:")
    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if read is None:
        raise _error(root, path, f"`{item}` names a file, and no files can be read here", None)
    if not acc.files:
        acc.files.append(path)
    included = _Acc(source=target, format="requirements")
    _RequirementsReader(read, root, included).file(target, constraint=False, via=(path, line or 1))
    acc.project = acc.project or included.project
    acc.requirement_files.append(target)
    for url in included.indexes:
        acc.index(url)
    acc.files.extend(f for f in included.files if f not in acc.files)
    acc.notes.extend(included.notes)
    acc.warnings.extend(included.warnings)


def _pip_option_in_conda(acc: _Acc, item: str, path: str, root: str, line: int | None) -> None:
    name, _, value = item.partition(" ") if " " in item else item.partition("=")
    if name in ("-i", "--index-url", "--extra-index-url"):
        acc.index(value.strip())
        return
    raise _error(
        root,
        path,
        f"`{item}` in the pip: list is not supported",
        line,
        "list requirements only; extra indexes with `--extra-index-url URL`",
    )


def _conda_python(version: str) -> str | None:
    version = version.strip()
    if not version:
        return None
    if version.startswith("=") and not version.startswith("=="):
        return version[1:].split("=")[0].rstrip(".*")
    if re.match(r"^[0-9]", version):
        return version.rstrip(".*")
    return version.replace("==", "")


def _conda_only_error(
    found: list[tuple[str, str | None, int | None]], path: str, root: str
) -> None:
    named = []
    debian = []
    for name, equivalent, _line in found:
        if equivalent:
            named.append(f"{name} (Debian: {equivalent})")
            debian.append(equivalent)
        else:
            named.append(f"{name} (no Debian equivalent)")
    hint = (
        f"add `system: [{', '.join(dict.fromkeys(debian))}]` to envd.yaml and remove them from "
        f"{path}"
        if debian
        else f"remove them from {path}"
    )
    if any(name in ("cudatoolkit", "cudnn", "nccl") for name, _, _ in found):
        hint += "; CUDA comes with the PyPI wheels (e.g. torch) and `cuda:` in envd.yaml"
    raise _error(
        root,
        path,
        f"conda-only packages that envd cannot install from PyPI: {', '.join(named)}",
        found[0][2],
        hint,
    )


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_environment_yml(text, path, root=root, read=read)
