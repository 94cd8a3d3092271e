"""PEP 751 pylock.toml."""

from __future__ import annotations

from packaging.utils import canonicalize_name

from envd.model.reqfiles.base import (
    Parsed,
    Pin,
    Read,
    _Acc,
    _checked,
    _error,
    _is_project,
    _mapping,
    _toml,
    line_of,
    shown,
)


@_checked
def parse_pylock(text: str, path: str = "pylock.toml", *, root: str = "") -> Parsed:
    """PEP 751 pylock.toml: [[packages]] with wheels/sdist/archive hashes, vcs, directories."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="pylock")
    if not str(data.get("lock-version", "")).startswith("1"):
        raise _error(
            root,
            path,
            f"unsupported lock-version {data.get('lock-version')!r}",
            line_of(text, "lock-version"),
            'pylock.toml files written for PEP 751 have `lock-version = "1.0"`',
        )
    if isinstance(data.get("requires-python"), str):
        acc.python = data["requires-python"]
    for package in (_mapping(p, "[[packages]]", path, root, text) for p in data["packages"]):
        name = canonicalize_name(str(package.get("name", "")))
        marker = package.get("marker")
        if "directory" in package:
            if _is_project(path, package["directory"].get("path")):
                acc.project = "editable" if package["directory"].get("editable") else "install"
                acc.project_name = name
            else:
                acc.warnings.append(f"{shown(root, path)}: `{name}` is a local directory; left out")
            continue
        artifacts = [*package.get("wheels", []), package.get("sdist"), package.get("archive")]
        digests = tuple(
            a["hashes"]["sha256"].lower()
            for a in artifacts
            if isinstance(a, dict) and "sha256" in a.get("hashes", {})
        )
        url = None
        if "vcs" in package:
            vcs = package["vcs"]
            url = f"{vcs.get('type', 'git')}+{vcs['url']}@{vcs.get('commit-id', '')}".rstrip("@")
        elif "archive" in package:
            url = package["archive"].get("url")
        if isinstance(package.get("index"), str):
            acc.index(package["index"])
        version = package.get("version")
        acc.pins.append(Pin(name=name, version=version, sha256=digests, url=url, marker=marker))
        base = f"{name} @ {url}" if url else f"{name}=={version}" if version else name
        acc.requirements.append(base + (f"; {marker}" if marker else ""))
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_pylock(text, path, root=root)
