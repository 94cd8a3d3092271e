"""uv.lock: every [[package]] with its version, source and hashes; the project's edges."""

from __future__ import annotations

from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envd.model.reqfiles import localpath
from envd.model.reqfiles.base import (
    Parsed,
    Pin,
    Read,
    _Acc,
    _checked,
    _error,
    _mapping,
    _sha256,
    _toml,
    line_of,
    shown,
)


@_checked
def parse_uv_lock(text: str, path: str = "uv.lock", *, root: str = "") -> Parsed:
    """uv.lock: every [[package]] with its version, source and artifact hashes."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="uv.lock")
    packages = data.get("package")
    if not isinstance(packages, list):
        raise _error(root, path, "no [[package]] entries", None, "run `uv lock` to write it")
    if isinstance(data.get("requires-python"), str):
        acc.python = data["requires-python"]
    edges: list[dict[str, Any]] = []
    for package in (_mapping(p, "[[package]]", path, root, text) for p in packages):
        name = canonicalize_name(str(package.get("name", "")))
        source = _mapping(package.get("source") or {}, "source", path, root, text)
        where = source.get("editable", source.get("virtual", source.get("directory")))
        if isinstance(where, str) and localpath.locate(path, where)[0] != "outside":
            # the root (with its `dev` group), every workspace member and local directory
            # package: their edges are installed, as `uv sync --all-packages` installs them
            groups = _mapping(package.get("dev-dependencies") or {}, "dev", path, root, text)
            dev = groups.get("dev", []) if where == "." else []
            for edge in [*package.get("dependencies", []), *dev]:
                edges.append(_mapping(edge, "dependencies", path, root, text))
        if "editable" in source or "virtual" in source:
            if where == ".":
                acc.project = "editable" if "editable" in source else None
                acc.project_name = name
            else:
                kind = "editable" if "editable" in source else "virtual"
                _local(acc, root, path, name, str(where), text, kind)
            continue
        if "directory" in source or "path" in source:
            kind = "directory" if "directory" in source else "path"
            written = str(source.get("directory", source.get("path")))
            _local(acc, root, path, name, written, text, kind)
            continue
        hashes = [package.get("sdist", {}).get("hash")] + [
            w.get("hash") for w in package.get("wheels", [])
        ]
        digests = tuple(d for d in (_sha256(h) for h in hashes) if d)
        url = None
        if "git" in source:
            url = f"git+{source['git']}"
        elif "url" in source:
            url = source["url"]
        elif "registry" in source:
            acc.index(source["registry"])
        acc.pins.append(Pin(name=name, version=package.get("version"), sha256=digests, url=url))
        acc.requirements.append(f"{name} @ {url}" if url else f"{name}=={package.get('version')}")
    acc.direct = _uv_lock_direct(edges, acc.pins)
    return acc.freeze()


def _local(acc: _Acc, root: str, path: str, name: str, written: str, text: str, kind: str) -> None:
    """A workspace member or path dependency: refused outside the project. An editable
    workspace member is installed from the project's files, as `uv sync --all-packages`
    does; a virtual one is not a package (its dependencies are installed); a non-editable
    local directory is installed from the project's files too (editable: envd installs
    local packages as links to their folder, saying so); a local file (a wheel or sdist
    `path`) is left out with a warning saying so."""
    where, target = localpath.locate(path, written)
    if where == "outside":
        message, hint = localpath.outside_message(f"`{name}`: local source", written)
        raise _error(root, path, message, line_of(text, f'"{written}"'), hint)
    if kind == "editable":
        if target not in acc.members:
            acc.members.append(target)
        return
    if kind == "virtual":
        return
    if kind == "directory" and where == "inside":
        if target not in acc.members:
            acc.members.append(target)
        acc.notes.append(localpath.installed_editable_note(shown(root, path), name, target))
        return
    message, _ = localpath.inside_message(f"`{name}`: local source", target)
    acc.warnings.append(f"{shown(root, path)}: {message}; left out")


def _uv_lock_direct(edges: list[dict[str, Any]], pins: list[Pin]) -> list[str]:
    """The root's dependency edges as requirements: `name[extras]==version; marker`."""
    versions: dict[str, set[str]] = {}
    for pin in pins:
        if pin.version is not None and pin.url is None:
            versions.setdefault(pin.name, set()).add(pin.version)
    out: list[str] = []
    for edge in edges:
        name = canonicalize_name(str(edge.get("name", "")))
        if name not in versions:
            continue  # a local workspace member, or a URL source: left out above
        extras = edge.get("extra") or []
        extra = f"[{','.join(sorted(str(e) for e in extras))}]" if extras else ""
        pinned = versions[name]
        version = f"=={next(iter(pinned))}" if len(pinned) == 1 else ""
        marker = f"; {edge['marker']}" if isinstance(edge.get("marker"), str) else ""
        text = str(Requirement(f"{name}{extra}{version}{marker}"))
        if text not in out:
            out.append(text)
    return out


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_uv_lock(text, path, root=root)
