"""What differs between two fingerprints, section by section (pure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from envd.fingerprint import Fingerprint, Package

PACKAGE_FIELDS = ("debian_packages", "python_packages", "cuda_libraries")


@dataclass(frozen=True)
class Change:
    section: str  # "environment" or "host"
    field: str
    kind: str  # "added", "removed", "changed"
    name: str = ""  # package name; "" for scalar fields
    old: str = ""
    new: str = ""


@dataclass(frozen=True)
class FingerprintDiff:
    changes: tuple[Change, ...]
    environment_identical: bool
    host_identical: bool

    @property
    def identical(self) -> bool:
        return self.environment_identical and self.host_identical


def _packages(
    section: str, name: str, old: tuple[Package, ...], new: tuple[Package, ...]
) -> list[Change]:
    a = {p.name: p for p in old}
    b = {p.name: p for p in new}
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key not in b:
            out.append(Change(section, name, "removed", key, a[key].version, ""))
        elif key not in a:
            out.append(Change(section, name, "added", key, "", b[key].version))
        elif a[key].version != b[key].version:
            out.append(Change(section, name, "changed", key, a[key].version, b[key].version))
        elif a[key].detail != b[key].detail:
            # Same version, different files (e.g. a rebuilt wheel or files changed by hand).
            out.append(
                Change(
                    section,
                    name,
                    "changed",
                    key,
                    f"{a[key].version} ({a[key].detail[:12]})",
                    f"{b[key].version} ({b[key].detail[:12]})",
                )
            )
    return out


def _scalars(
    section: str, old: dict[str, Any], new: dict[str, Any], prefix: str = ""
) -> list[Change]:
    out = []
    for key in sorted(old.keys() | new.keys()):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) or isinstance(b, dict):
            out += _scalars(section, a or {}, b or {}, f"{path}.")
        elif a != b:
            kind = "added" if a is None else "removed" if b is None else "changed"
            out.append(Change(section, path, kind, "", _text(a), _text(b)))
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in sorted(value.items()))
    return str(value)


def diff_fingerprints(a: Fingerprint, b: Fingerprint) -> FingerprintDiff:
    changes: list[Change] = []
    for f in fields(a.environment):
        old, new = getattr(a.environment, f.name), getattr(b.environment, f.name)
        if f.name in PACKAGE_FIELDS:
            changes += _packages("environment", f.name, old, new)
        elif old != new:
            changes += _scalars("environment", {f.name: old}, {f.name: new})
    host_a, host_b = asdict(a.host), asdict(b.host)
    changes += _scalars("host", host_a, host_b)
    return FingerprintDiff(
        tuple(changes),
        environment_identical=a.environment_hash == b.environment_hash,
        host_identical=a.host_hash == b.host_hash,
    )


def format_diff(diff: FingerprintDiff, a_label: str, b_label: str) -> str:
    if diff.identical:
        return f"{a_label} and {b_label} are identical\n"
    lines = [f"--- {a_label}", f"+++ {b_label}"]
    for section in ("environment", "host"):
        items = [c for c in diff.changes if c.section == section]
        same = diff.environment_identical if section == "environment" else diff.host_identical
        if same:
            lines.append(f"{section}: identical")
            continue
        lines.append(f"{section}: {len(items)} difference(s)")
        for c in items:
            what = f"{c.field}: {c.name}" if c.name else c.field
            if c.kind == "added":
                lines.append(f"  + {what} {c.new}")
            elif c.kind == "removed":
                lines.append(f"  - {what} {c.old}")
            else:
                lines.append(f"  ~ {what} {c.old} -> {c.new}")
    return "\n".join(lines) + "\n"
