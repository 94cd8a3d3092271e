"""pyproject.toml: PEP 621 [project], PEP 735 [dependency-groups], poetry best-effort."""

from __future__ import annotations

import re
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from envd.model.reqfiles.base import (
    Parsed,
    Read,
    _Acc,
    _add_requirements,
    _checked,
    _error,
    _string_list,
    _table,
    _toml,
    line_of,
    shown,
)


@_checked
def parse_pyproject(
    text: str,
    path: str = "pyproject.toml",
    *,
    root: str = "",
    extras: tuple[str, ...] = (),
    groups: tuple[str, ...] = (),
) -> Parsed:
    """PEP 621 [project], PEP 735 [dependency-groups]; poetry's table best-effort."""
    data = _toml(text, path, root)
    acc = _Acc(source=path, format="pyproject")
    project = _table(data.get("project"), path, root, "project", text)
    if "build-system" in data or project:
        acc.project_name = project.get("name") if isinstance(project.get("name"), str) else None
    if "build-system" in data:
        acc.project = "install"
    if project:
        if "dependencies" in (project.get("dynamic") or []):
            acc.warnings.append(
                f"{shown(root, path)}: dependencies are dynamic (computed by the build backend); "
                "they come with the project when it is installed"
            )
        _add_requirements(
            acc,
            _string_list(project.get("dependencies"), path, root, "project.dependencies", text),
            path,
            root,
            text,
        )
        optional = _table(
            project.get("optional-dependencies"), path, root, "optional-dependencies", text
        )
        for extra in extras:
            if extra not in optional:
                raise _error(
                    root,
                    path,
                    f"no extra `{extra}` in [project.optional-dependencies]",
                    line_of(text, "optional-dependencies"),
                    f"extras defined: {', '.join(sorted(optional)) or 'none'}",
                )
            key = f"project.optional-dependencies.{extra}"
            _add_requirements(
                acc, _string_list(optional[extra], path, root, key, text), path, root, text
            )
        if isinstance(project.get("requires-python"), str):
            acc.python = project["requires-python"]
    _dependency_groups(acc, data, groups, path, root, text)
    poetry = _table(
        _table(data.get("tool"), path, root, "tool", text).get("poetry"),
        path,
        root,
        "tool.poetry",
        text,
    )
    if poetry and not project:
        _poetry(acc, poetry, path, root, text)
    return acc.freeze()


def _dependency_groups(
    acc: _Acc, data: dict[str, Any], groups: tuple[str, ...], path: str, root: str, text: str
) -> None:
    table = _table(data.get("dependency-groups"), path, root, "dependency-groups", text)
    named = {canonicalize_name(k): v for k, v in table.items()}

    def expand(group: str, seen: tuple[str, ...]) -> list[str]:
        key = canonicalize_name(group)
        if key in seen:
            raise _error(
                root,
                path,
                f"dependency group include cycle: {' -> '.join([*seen, key])}",
                line_of(text, f'include-group = "{group}"'),
                "remove one of the `{include-group = ...}` entries",
            )
        if key not in named:
            raise _error(
                root,
                path,
                f"no dependency group `{group}` in [dependency-groups]",
                line_of(text, group),
                f"groups defined: {', '.join(sorted(named)) or 'none'}",
            )
        items = named[key]
        if not isinstance(items, list):
            raise _error(root, path, f"dependency group `{group}` must be a list", None)
        out: list[str] = []
        for item in items:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict) and isinstance(item.get("include-group"), str):
                out.extend(expand(item["include-group"], (*seen, key)))
            else:
                raise _error(
                    root,
                    path,
                    f"dependency group `{group}` has an entry that is neither a requirement nor "
                    f"{{include-group = ...}}: {item!r}",
                    None,
                )
        return out

    for group in groups:
        _add_requirements(acc, expand(group, ()), path, root, text)


def poetry_constraint(value: str) -> str:
    """A poetry version constraint (^, ~, *, bare versions, comma/|| lists) as PEP 440."""
    value = value.strip()
    if value in ("*", ""):
        return ""
    if "||" in value:
        raise ValueError(f"`{value}`: alternatives (||) have no PEP 440 form")
    parts = []
    for part in (p.strip() for p in value.split(",")):
        for piece in part.split():
            parts.append(_poetry_one(piece))
    return ",".join(p for p in parts if p)


def _poetry_one(value: str) -> str:
    def numbers(v: str) -> list[int]:
        return [int(x) for x in v.split(".")]

    if value.startswith("^"):
        v = numbers(value[1:])
        first = next((i for i, x in enumerate(v) if x != 0), len(v) - 1)
        upper = [*v[:first], v[first] + 1]
        return f">={value[1:]},<{'.'.join(map(str, upper))}"
    if value.startswith("~") and not value.startswith("~="):
        v = numbers(value[1:])
        upper = [v[0] + 1] if len(v) == 1 else [v[0], v[1] + 1]
        return f">={value[1:]},<{'.'.join(map(str, upper))}"
    if re.match(r"^[0-9]", value):
        return f"=={value}"
    return value


def _poetry(acc: _Acc, poetry: dict[str, Any], path: str, root: str, text: str) -> None:
    acc.notes.append(
        f"{shown(root, path)}: read [tool.poetry.dependencies] best-effort "
        "(poetry constraints translated to PEP 440)"
    )
    if isinstance(poetry.get("name"), str):
        acc.project_name = poetry["name"]
    deps = _table(poetry.get("dependencies"), path, root, "tool.poetry.dependencies", text)
    for name, value in deps.items():
        line = line_of(text, f"{name} =") or line_of(text, name)
        version, extras, markers = value, [], None
        if isinstance(value, dict):
            if value.get("optional"):
                continue
            if any(k in value for k in ("git", "path", "url")):
                acc.warnings.append(
                    f"{shown(root, path)}:{line}: `{name}` comes from git/path/url; "
                    "left out, add it as `name @ URL` by hand"
                )
                continue
            version = value.get("version", "*")
            extras = value.get("extras", [])
            markers = value.get("markers")
        if not isinstance(version, str):
            raise _error(root, path, f"`{name}`: version must be a string", line)
        try:
            spec = poetry_constraint(version)
            SpecifierSet(spec)
        except (ValueError, InvalidSpecifier) as exc:
            raise _error(
                root,
                path,
                f"`{name} = {version!r}`: cannot translate the poetry constraint ({exc})",
                line,
                "write a PEP 440 range such as `>=1.2,<2`",
            ) from None
        if name.lower() == "python":
            acc.python = spec or None
            continue
        extra = f"[{','.join(extras)}]" if extras else ""
        marker = f"; {markers}" if markers else ""
        _add_requirements(acc, [f"{name}{extra}{spec}{marker}"], path, root, text)


def parse(text: str, path: str, *, root: str = "", read: Read | None = None) -> Parsed:
    """The registry's signature (base.Parser)."""
    return parse_pyproject(text, path, root=root)
