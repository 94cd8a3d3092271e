"""What an image's manifest says is in it: its Debian packages and Python distributions, who
owns each path, how two manifests differ, and the files that contradict their packages.

Pure, like envd.model.content (whose `Manifest` these read); nothing here reads a layer.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from envd.model.content import (
    DPKG_STATUS,
    FACT_DPKG_LIST,
    FACT_METADATA,
    FACT_RECORD,
    Entry,
    Manifest,
    normalise,
    path_bytes,
)


@dataclass(frozen=True)
class DebianPackage:
    name: str
    version: str
    arch: str


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    path: str  # the .dist-info directory


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # added, removed, modified, mode, symlink
    owner: str = ""  # "deb:NAME" or "python:NAME" when a package owns the path


# ------------------------------------------------------------------ lists and owners


def debian_packages(manifest: Manifest) -> list[DebianPackage]:
    fact = manifest.facts.get(DPKG_STATUS)
    if fact is None:
        return []
    return sorted({DebianPackage(*i[:3]) for i in fact.items if len(i) >= 3}, key=_deb_key)


def _deb_key(p: DebianPackage) -> tuple[str, str, str]:
    return (p.name, p.arch, p.version)


def python_distributions(manifest: Manifest) -> list[Distribution]:
    out = []
    for path, fact in manifest.facts.items():
        if fact.kind == FACT_METADATA and fact.items and len(fact.items[0]) == 2:
            name, version = fact.items[0]
            out.append(Distribution(name, version, posixpath.dirname(path)))
    return sorted(out, key=lambda d: (d.name.lower(), d.version, path_bytes(d.path)))


def file_owners(manifest: Manifest) -> dict[str, str]:
    """path -> "deb:PACKAGE" or "python:DISTRIBUTION" for every path a package lists."""
    owners: dict[str, str] = {}
    for path in sorted(manifest.facts, key=path_bytes):
        fact = manifest.facts[path]
        if fact.kind == FACT_DPKG_LIST:
            package = posixpath.basename(path)[: -len(".list")].split(":")[0]
            owner = f"deb:{package}"
        elif fact.kind == FACT_RECORD:
            metadata = manifest.facts.get(posixpath.join(posixpath.dirname(path), "METADATA"))
            name = metadata.items[0][0] if metadata and metadata.items else ""
            stem = posixpath.basename(posixpath.dirname(path))[: -len(".dist-info")]
            owner = f"python:{name or stem.rsplit('-', 1)[0]}"
        else:
            continue
        for item in fact.items:
            if item and item[0] != "/":
                owners.setdefault(item[0], owner)
                # dpkg lists /bin/ls where a merged /usr holds it at /usr/bin/ls
                owners.setdefault(resolve_dirs(manifest, item[0]), owner)
    return owners


def resolve_dirs(manifest: Manifest, path: str) -> str:
    """path with symlinked directories on the way followed (the last component is kept)."""
    parts = path.strip("/").split("/")
    for _ in range(40):  # bounded: symlink loops end here
        current = "/"
        for i, part in enumerate(parts[:-1]):
            candidate = posixpath.join(current, part)
            entry = manifest.entries.get(candidate)
            if entry is not None and entry.kind == "symlink":
                base = "/" if entry.target.startswith("/") else current
                joined = normalise(posixpath.join(base, entry.target))
                parts = [*joined.strip("/").split("/"), *parts[i + 1 :]]
                parts = [p for p in parts if p]
                break
            current = candidate
        else:
            return normalise("/".join(parts))
    return path


def diff_manifests(old: Manifest, new: Manifest) -> list[Change]:
    """Every path that differs, sorted by path bytes, with its owner when one is known."""
    old_owners, new_owners = file_owners(old), file_owners(new)
    changes = []
    for path in sorted(old.entries.keys() | new.entries.keys(), key=path_bytes):
        a, b = old.entries.get(path), new.entries.get(path)
        if a == b:
            continue
        kind = _change_kind(a, b)
        owner = new_owners.get(path) or old_owners.get(path, "")
        changes.append(Change(path, kind, owner))
    return changes


def _change_kind(a: Entry | None, b: Entry | None) -> str:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    if a.kind == b.kind == "symlink" and a.target != b.target:
        return "symlink"
    same_content = (a.kind, a.size, a.sha256, a.target, a.device) == (
        b.kind,
        b.size,
        b.sha256,
        b.target,
        b.device,
    )
    return "mode" if same_content else "modified"


# ------------------------------------------------------------------ self-consistency

# Files a Python start-up runs by itself: whoever adds one runs code in every interpreter.
_STARTUP = ("sitecustomize.py", "usercustomize.py")
# What `uv venv` itself writes into site-packages (owned by no distribution).
_VENV_FILES = ("_virtualenv.pth", "_virtualenv.py")


@dataclass(frozen=True)
class Problem:
    path: str
    what: str  # a sentence fragment: "does not match its RECORD (python:six)"


def integrity_problems(manifest: Manifest) -> list[Problem]:
    """Files that contradict the packages installed around them, read from the bytes alone:
    a file whose sha256 differs from its distribution's RECORD, a file RECORD lists that is
    gone, and start-up code (`.pth`, sitecustomize) in site-packages that no package owns."""
    problems: list[Problem] = []
    owned: set[str] = set()
    site_dirs: set[str] = set()
    for record_path, fact in manifest.facts.items():
        if fact.kind != FACT_RECORD:
            continue
        dist_dir = posixpath.dirname(record_path)
        site_dirs.add(posixpath.dirname(dist_dir))
        name = posixpath.basename(dist_dir)[: -len(".dist-info")].rsplit("-", 1)[0]
        for item in fact.items:
            path = item[0]
            owned.add(path)
            expected = item[1] if len(item) > 1 else ""
            if not expected:
                continue
            entry = manifest.entries.get(path)
            if entry is None:
                problems.append(Problem(path, f"is listed in {name}'s RECORD but missing"))
            elif entry.kind == "file" and entry.sha256 != expected:
                problems.append(Problem(path, f"does not match {name}'s RECORD"))
    for path, entry in manifest.entries.items():
        parent, base = posixpath.split(path)
        if entry.kind != "file" or parent not in site_dirs or path in owned:
            continue
        if (base.endswith(".pth") and base not in _VENV_FILES) or base in _STARTUP:
            problems.append(Problem(path, "runs at Python start-up and no package owns it"))
    return sorted(problems, key=lambda p: path_bytes(p.path))
