"""Pipfile.lock (pipenv's JSON lock)."""

from __future__ import annotations

from packaging.utils import canonicalize_name

from envd.model.reqfiles import localpath
from envd.model.reqfiles.base import (
    Parsed,
    Pin,
    Read,
    _Acc,
    _checked,
    _error,
    _is_project,
    _json,
    _mapping,
    _sha256,
    line_of,
    shown,
)

# a local path that names a file (a built wheel or sdist), not a package folder
_ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz")


@_checked
def parse_pipfile_lock(
    text: str, path: str = "Pipfile.lock", *, root: str = "", dev: bool = False
) -> Parsed:
    """Pipfile.lock (JSON): default (and develop) with "version": "==x" and "hashes"."""
    data = _json(text, path, root)
    acc = _Acc(source=path, format="Pipfile.lock")
    meta = data.get("_meta", {})
    acc.python = meta.get("requires", {}).get("python_full_version") or meta.get(
        "requires", {}
    ).get("python_version")
    for source in meta.get("sources", []):
        if isinstance(source.get("url"), str):
            acc.index(source["url"])
    sections = ["default", "develop"] if dev else ["default"]
    for section in sections:
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            raise _error(root, path, f"`{section}` must be an object", None)
        for name, entry in entries.items():
            entry = _mapping(entry, f"{section}.{name}", path, root, text)
            canonical = canonicalize_name(name)
            marker = entry.get("markers")
            if entry.get("editable") or "path" in entry:
                if _is_project(path, entry.get("path")):
                    acc.project = "editable" if entry.get("editable") else "install"
                    acc.project_name = canonical
                    continue
                written = entry.get("path")
                if isinstance(written, str):
                    where, target = localpath.locate(path, written)
                    if where == "outside":
                        message, hint = localpath.outside_message(f"`{name}`: path", written)
                        raise _error(root, path, message, line_of(text, f'"{name}"'), hint)
                    if entry.get("editable") or not written.endswith(_ARCHIVES):
                        # installed editable from the project's files, as `pipenv sync` does
                        # (a folder not marked editable too, saying so)
                        if target not in acc.members:
                            acc.members.append(target)
                        if not entry.get("editable"):
                            acc.notes.append(
                                localpath.installed_editable_note(shown(root, path), name, target)
                            )
                        continue
                acc.warnings.append(f"{shown(root, path)}: `{name}` is a local path; left out")
                continue
            digests = tuple(d for d in (_sha256(h) for h in entry.get("hashes", [])) if d)
            if "git" in entry:
                url = f"git+{entry['git']}" + (f"@{entry['ref']}" if entry.get("ref") else "")
                acc.pins.append(Pin(name=canonical, url=url, marker=marker))
                req = f"{canonical} @ {url}"
            else:
                version = str(entry.get("version", ""))
                if not version.startswith("=="):
                    raise _error(
                        root,
                        path,
                        f'`{name}` has no exact version ("version": {version!r})',
                        line_of(text, f'"{name}"'),
                        "run `pipenv lock` again",
                    )
                exact = version.removeprefix("==")
                acc.pins.append(Pin(name=canonical, version=exact, sha256=digests, marker=marker))
                req = f"{canonical}=={exact}"
            acc.requirements.append(req + (f"; {marker}" if marker else ""))
    return acc.freeze()


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_pipfile_lock(text, path, root=root)
