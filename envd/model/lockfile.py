"""envd.lock: the typed model, its deterministic serialisation, inputs, hashing and staleness.

Pure: no I/O. The file is JSON with sorted keys and a trailing newline, so the same inputs
always give the same bytes; `envd.gateways.files.write_atomic` puts it on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, get_type_hints

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envd.errors import LockError
from envd.model.direct import git_parts, is_commit, is_vcs, local_filename, without_fragment
from envd.model.fingerprint import EnvironmentSection
from envd.model.pythons import AUTO
from envd.model.safenames import UnsafeName
from envd.model.setupmeta import ComputedMetadata
from envd.model.spec import DirectUrl, Spec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LOCK_VERSION = 1


@dataclass(frozen=True)
class DebianPackage:
    name: str
    version: str
    arch: str = ""


@dataclass(frozen=True)
class PythonPackage:
    name: str  # canonical (PEP 503 normalised) name
    version: str
    hashes: tuple[str, ...]  # "sha256:<hex>", sorted
    index: str = ""  # index URL the artifacts come from; "" means PyPI
    # A direct URL requirement's file (no fragment): then `hashes` is that one file's sha256,
    # `version` the one its file name carries, and `index` is "". A git requirement:
    # `git+https://host/repo@<commit>`, hashed as the sdist envd makes of that commit
    # (envd.model.direct). "" for index packages.
    url: str = ""


@dataclass(frozen=True)
class BaseLock:
    """How the base image is pinned.

    kind == "debian": built with mmdebstrap; `suite`, `mirror`, `packages` (the exact set in the
    tarball) and `tarball_sha256` (bit-identical with SOURCE_DATE_EPOCH) pin it.
    kind == "image": `reference` as written, `digest` the repo digest or image ID it resolved to.
    """

    kind: str
    reference: str = ""
    digest: str = ""
    suite: str = ""
    mirror: str = ""
    tarball_sha256: str = ""
    packages: tuple[DebianPackage, ...] = ()


@dataclass(frozen=True)
class Target:
    """What packages are resolved for, read from inside the base image."""

    python_version: str  # exact, e.g. "3.11.2"
    platform: str  # platform tag, e.g. "manylinux_2_36_x86_64"
    glibc: str  # e.g. "2.36"
    arch: str  # e.g. "x86_64"
    accelerator: str = "cpu"  # "cpu" or a CUDA variant such as "cu124"
    min_driver: str = ""  # minimum NVIDIA driver for `accelerator`, "" for cpu


@dataclass(frozen=True)
class Inputs:
    """The normalised spec inputs a lock was made from (hashed for a fast staleness check)."""

    base: str  # "debian:bookworm" or "image:python:3.11-slim"
    python: str
    system: tuple[str, ...]
    requirements: tuple[str, ...]  # packages + requirements file lines, normalised, in order
    indexes: tuple[str, ...]
    cuda: str
    env: tuple[tuple[str, str], ...]
    setup: tuple[str, ...]
    from_source: tuple[str, ...] = ()  # packages built from sdists (in this project's own step)
    # The project files each setup step names (`files:`), in setup order; () when none does.
    setup_files: tuple[tuple[str, ...], ...] = ()
    project: str = ""  # `project:`: "editable" or "install" the project itself; "" for neither
    members: tuple[str, ...] = ()  # local packages in subfolders, installed editable
    # "relpath sha256:<hex>": the files setup.py's computed metadata comes from (the lock's
    # `computed` says what the legacy backend made of them); () when read statically
    computed: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockFile:
    envd_version: str
    uv_version: str
    inputs: Inputs
    inputs_hash: str  # "sha256:<hex>" of the canonical inputs
    target: Target
    base: BaseLock
    system: tuple[DebianPackage, ...]  # system packages (and their deps) at exact versions
    python: tuple[PythonPackage, ...]  # sorted by name
    shared_image: str = ""  # "registry/repo@sha256:..." when pinned by `share image --pin`
    lock_version: int = LOCK_VERSION
    # The environment hash (every file) of the first build of these pins: a later build or
    # pull of the same lock, on any machine, must give exactly this environment.
    environment_hash: str = ""
    # setup.py's metadata as the PEP 517 legacy backend computed it in a throwaway container
    # at lock (empty: read statically); the build installs the project from this, never
    # running setup.py. Left out of the text while empty, so older locks read as they did.
    computed: ComputedMetadata = dataclasses.field(default_factory=ComputedMetadata)
    # (what, short sha256) for each pinned fact, then ("root", sha256 of the whole lock):
    # written by `dumps`, checked by `loads`, so a hand edit is named, not silently built.
    integrity: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)


class LockEdited(LockError):
    """envd.lock's content no longer matches its integrity record: it was edited by hand."""

    def __init__(self, message: str, *, hint: str, lock: LockFile, edited: tuple[str, ...]):
        super().__init__(message, hint=hint)
        self.lock = lock  # as read, not to be trusted
        self.edited = edited  # python package names whose pins were edited


_T = TypeVar("_T", bound="DataclassInstance")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_GIT_AT_COMMIT = re.compile(r"git\+https?://[^#\s]+@[0-9a-f]{40}")
_RELOCK_HINT = "run `envctl lock` to write it again"


def inputs_from_spec(spec: Spec) -> Inputs:
    """The spec inputs a lock depends on, normalised so that equal meaning gives equal inputs."""
    if spec.base.debian:
        base = f"debian:{spec.base.debian}"
    elif spec.base.image:
        base = f"image:{spec.base.image}"
    elif spec.python == AUTO:
        base = "auto"  # `python: auto`: the lock chooses the Debian suite
    else:
        raise LockError("envd.yaml: `base` names neither `image` nor `debian`")
    return Inputs(
        base=base,
        python=spec.python or "",
        system=tuple(sorted(set(spec.system))),
        requirements=tuple(_normalise(r) for r in spec.all_requirements),
        indexes=tuple(spec.indexes),
        cuda=spec.cuda or "",
        env=tuple(sorted(spec.env)),
        setup=tuple(spec.setup),
        from_source=spec.from_source,
        setup_files=_setup_files(spec),
        project=spec.project or "",
        members=spec.members,
        computed=spec.computed,
    )


def _setup_files(spec: Spec) -> tuple[tuple[str, ...], ...]:
    files = tuple(step.files for step in spec.setup_steps)
    return files if any(files) else ()


def hash_inputs(inputs: Inputs) -> str:
    """sha256 of the canonical JSON of `inputs` (sorted keys, UTF-8, compact)."""
    payload = _inputs_dict(inputs)
    if not payload["from_source"]:
        del payload["from_source"]  # so locks made before the key existed keep their hash
    return "sha256:" + hashlib.sha256(_canonical_json(payload)).hexdigest()


# Inputs keys added later: left out of the lock's text, its hashes and its integrity record
# while empty, so a lock written before they existed reads, hashes and verifies as it did.
_LATER_INPUTS = ("setup_files", "project", "members", "computed")


def _inputs_dict(inputs: Inputs) -> dict[str, Any]:
    payload = dataclasses.asdict(inputs)
    for key in _LATER_INPUTS:
        if not payload[key]:
            del payload[key]
    return payload


def _lock_dict(lock: LockFile) -> dict[str, Any]:
    data = dataclasses.asdict(lock)
    data["inputs"] = _inputs_dict(lock.inputs)
    if lock.computed == ComputedMetadata():
        del data["computed"]
    for package in data["python"]:
        if not package["url"]:
            del package["url"]  # an index package reads, hashes and verifies as it always did
    return data


def dumps(lock: LockFile) -> str:
    """The lock file's text: the same lock always gives the same bytes."""
    lock = dataclasses.replace(
        lock,
        python=tuple(
            sorted(
                (dataclasses.replace(p, hashes=tuple(sorted(p.hashes))) for p in lock.python),
                key=lambda p: (p.name, p.version),
            )
        ),
        system=tuple(sorted(lock.system, key=lambda d: (d.name, d.arch, d.version))),
        base=dataclasses.replace(
            lock.base,
            packages=tuple(sorted(lock.base.packages, key=lambda d: (d.name, d.arch, d.version))),
        ),
    )
    lock = dataclasses.replace(lock, integrity=integrity(lock))
    return json.dumps(_lock_dict(lock), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def integrity(lock: LockFile) -> tuple[tuple[str, str], ...]:
    """A short digest of every pinned fact, and a root digest over all of the lock."""

    def short(value: object) -> str:
        return hashlib.sha256(_canonical_json(value)).hexdigest()[:16]

    facts: list[tuple[str, str]] = [
        ("base", short(dataclasses.asdict(lock.base))),
        ("target", short(dataclasses.asdict(lock.target))),
        ("inputs", short([lock.inputs_hash, _inputs_dict(lock.inputs)])),
        ("tools", short([lock.envd_version, lock.uv_version, lock.shared_image])),
        ("environment", short(lock.environment_hash)),
    ]
    if lock.computed != ComputedMetadata():
        facts.append(("computed metadata", short(dataclasses.asdict(lock.computed))))
    for d in sorted(lock.system, key=lambda d: (d.name, d.arch, d.version)):
        facts.append((f"debian {d.name}", short(dataclasses.asdict(d))))
    for p in sorted(lock.python, key=lambda p: p.name):
        where = [p.version, p.index, p.url] if p.url else [p.version, p.index]
        facts.append((f"python {p.name} version", short(where)))
        facts.append((f"python {p.name} sha256", short(sorted(p.hashes))))
    root = _lock_dict(dataclasses.replace(lock, integrity=()))
    return (*facts, ("root", hashlib.sha256(_canonical_json(root)).hexdigest()))


def integrity_changes(lock: LockFile) -> list[str]:
    """What was edited since `dumps` wrote the lock ([] when nothing; an old lock has no record)."""
    if not lock.integrity:
        return []
    recorded, actual = dict(lock.integrity), dict(integrity(lock))
    changes = []
    for what in sorted(set(recorded) | set(actual)):
        if what == "root" or recorded.get(what) == actual.get(what):
            continue
        kind, _, name = what.partition(" ")
        if kind == "python" and name.endswith(" sha256"):
            changes.append(f"{name[: -len(' sha256')]}'s sha256 changed")
        elif kind == "python" and name.endswith(" version"):
            changes.append(f"{name[: -len(' version')]}'s pinned version changed")
        elif what not in recorded:
            changes.append(f"{what} was added")
        elif what not in actual:
            changes.append(f"{what} was removed")
        else:
            changes.append(f"{what} changed")
    if not changes and recorded.get("root") != actual.get("root"):
        changes.append("its content changed")
    return changes


def loads(text: str, source: str) -> LockFile:
    """Parse and validate a lock file's text; `source` names the file in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _corrupt(source, f"not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except RecursionError:  # json recurses once per level: `[[[[...` deeper than the stack
        raise _corrupt(source, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise _corrupt(source, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise _corrupt(source, "expected a JSON object at the top level")
    version = data.get("lock_version")
    if type(version) is not int:
        raise _corrupt(source, "`lock_version` is missing or not an integer")
    if version > LOCK_VERSION:
        raise LockError(
            f"{source}: written by a newer envd (lock version {version}; "
            f"this envd reads version {LOCK_VERSION})",
            hint="upgrade envd, or run `envctl lock` to write it again for this version",
        )
    if version != LOCK_VERSION:
        raise _corrupt(source, f"unknown lock version {version} (expected {LOCK_VERSION})")
    try:
        lock = _convert_dataclass(LockFile, data, "")
    except _Invalid as exc:
        raise _corrupt(source, str(exc)) from exc
    if lock.inputs_hash != hash_inputs(lock.inputs):
        raise _corrupt(source, "`inputs_hash` does not match `inputs` (edited by hand?)")
    seen: set[str] = set()
    for i, package in enumerate(lock.python):
        if package.name in seen:
            raise _corrupt(source, f"python[{i}]: {package.name} is listed twice")
        seen.add(package.name)
        if not package.hashes or not all(_SHA256.fullmatch(h) for h in package.hashes):
            raise _corrupt(source, f"python[{i}]: {package.name} needs sha256 hashes")
        if package.url and (
            len(package.hashes) != 1
            or package.index
            or not (
                _GIT_AT_COMMIT.fullmatch(package.url)
                or (package.url.startswith(("https://", "http://")) and "#" not in package.url)
            )
        ):
            raise _corrupt(
                source,
                f"python[{i}]: {package.name} from {package.url} needs exactly one sha256, "
                "an http(s) URL without a fragment (or git+http(s) at a 40-hex commit), and no "
                "index",
            )
        if package.url:
            try:
                local_filename(package.name, package.url, package.version)
            except UnsafeName as exc:  # (exit 9 like every name refused on its way in)
                raise UnsafeName(f"{source}: python[{i}]: {exc.message}", hint=exc.hint) from None
            except ValueError as exc:  # urlsplit: "Invalid IPv6 URL" and the like
                raise _corrupt(source, f"python[{i}]: {package.name}: {exc}") from None
    edits = integrity_changes(lock)
    if edits:
        edited = tuple(
            sorted(
                {w.split(" ", 2)[1] for w, _ in lock.integrity if w.startswith("python ")}
                & {e.split("'", 1)[0] for e in edits}
            )
        )
        raise LockEdited(
            f"{source} was edited: "
            + "; ".join(edits[:10])
            + (f" (and {len(edits) - 10} more)" if len(edits) > 10 else ""),
            hint="run `envctl lock` to re-resolve (the edited pins are resolved again)",
            lock=lock,
            edited=edited,
        )
    return lock


def staleness(lock: LockFile, inputs: Inputs) -> list[str]:
    """Why `lock` no longer matches `inputs`, one reason per change; empty when in sync."""
    old, new = lock.inputs, inputs
    reasons: list[str] = []
    if old.base != new.base:
        reasons.append(f"base changed: {old.base} → {new.base}")
    if old.python != new.python:
        reasons.append(f"python changed: {old.python or 'unset'} → {new.python or 'unset'}")
    reasons += _added_removed("system package", old.system, new.system)
    reasons += _added_removed("source build", old.from_source, new.from_source)
    reasons += _requirement_changes(old.requirements, new.requirements)
    index_changes = _added_removed("index", old.indexes, new.indexes)
    if not index_changes and old.indexes != new.indexes:
        index_changes = ["index order changed"]  # the first index that has a package wins
    reasons += index_changes
    if old.cuda != new.cuda:
        reasons.append(f"cuda changed: {old.cuda or 'unset'} → {new.cuda or 'unset'}")
    old_env, new_env = dict(old.env), dict(new.env)
    for key in sorted(old_env.keys() | new_env.keys()):
        if old_env.get(key) != new_env.get(key):
            reasons.append(f"env changed: {key}")
    if old.setup != new.setup:
        reasons.append("setup changed")
    elif old.setup_files != new.setup_files:
        reasons.append("setup files changed")
    if old.project != new.project:
        reasons.append(f"project changed: {old.project or 'unset'} → {new.project or 'unset'}")
    if old.members != new.members:
        reasons.append(
            f"local packages changed: {', '.join(old.members) or 'none'} → "
            f"{', '.join(new.members) or 'none'}"
        )
    if old.computed != new.computed:
        reasons.append(_computed_change(old.computed, new.computed))
    if not reasons and lock.inputs_hash != hash_inputs(new):
        reasons.append("inputs hash changed")
    return reasons


def _computed_change(old: Sequence[str], new: Sequence[str]) -> str:
    if not new:
        return "the project's metadata is no longer computed from setup.py"
    if not old:
        return "the project's metadata is now computed from setup.py (in a container at lock)"
    old_by, new_by = (dict(f.rsplit(" ", 1) for f in files) for files in (old, new))
    changed = sorted(f for f in old_by.keys() | new_by.keys() if old_by.get(f) != new_by.get(f))
    return (
        f"{', '.join(changed) or 'the files'} changed, which setup.py's computed metadata "
        "comes from (it is computed again in a container at lock)"
    )


def spec_staleness(lock: LockFile, spec: Spec) -> list[str]:
    """The one answer to "why does `lock` no longer match `spec`": the inputs that changed
    (`staleness`) or, when none did, the direct URL requirements the locked files no longer
    match (`direct_changes`). Empty when in sync. `status`, the watcher, `lock --check` and
    `build` all ask this, so they cannot disagree."""
    reasons = staleness(lock, inputs_from_spec(spec))
    return reasons or direct_changes(lock.python, spec.direct)


def direct_changes(python: tuple[PythonPackage, ...], direct: tuple[DirectUrl, ...]) -> list[str]:
    """How the direct URL requirements differ from what the lock holds for them: a URL or a
    required sha256 that the locked file no longer matches (one reason each)."""
    locked = {p.name: p for p in python}
    reasons = []
    for requirement in direct:
        package = locked.get(requirement.name)
        url = without_fragment(requirement.url)
        if package is None and Requirement(requirement.requirement).marker is not None:
            continue  # (a marker this target does not match: nothing to lock)
        if is_vcs(url) and package is not None and is_vcs(package.url):
            # A branch or tag was resolved when locking: the lock holds its commit then.
            repo, ref = git_parts(url)
            held, commit = git_parts(package.url)
            if repo == held and (ref == commit or not is_commit(ref)):
                url = package.url
        if package is None or package.url != url:
            was = (package.url or f"{package.version} from an index") if package else "nothing"
            reasons.append(f"{requirement.name}'s URL changed: {was} → {url}")
        elif requirement.sha256 and not {f"sha256:{h}" for h in requirement.sha256} & set(
            package.hashes
        ):
            reasons.append(
                f"{requirement.name}'s required sha256 changed ({requirement.where}): "
                f"locked {package.hashes[0]}, required sha256:{requirement.sha256[0]}"
            )
    return reasons


def _normalise(requirement: str) -> str:
    """The requirement as packaging writes it, with its name in canonical form."""
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return requirement.strip()
    parsed.name = canonicalize_name(parsed.name)
    return str(parsed)


def _requirement_key(requirement: str) -> str:
    try:
        return canonicalize_name(Requirement(requirement).name)
    except InvalidRequirement:
        return requirement.strip()


def _requirement_changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    old_by_name, new_by_name = _by_name(old), _by_name(new)
    reasons: list[str] = []
    for name, written in new_by_name.items():
        if name not in old_by_name:
            reasons.append(f"package added: {name}")
        elif sorted(old_by_name[name]) != sorted(written):
            was, now = ", ".join(old_by_name[name]), ", ".join(written)
            reasons.append(f"constraint changed: {was} → {now}")
    reasons += [f"package removed: {name}" for name in old_by_name if name not in new_by_name]
    if not reasons and [_normalise(r) for r in old] != [_normalise(r) for r in new]:
        reasons.append("package order changed")
    return reasons


def _by_name(requirements: Sequence[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for requirement in requirements:
        grouped.setdefault(_requirement_key(requirement), []).append(_normalise(requirement))
    return grouped


def _added_removed(what: str, old: Sequence[str], new: Sequence[str]) -> list[str]:
    return [f"{what} added: {x}" for x in new if x not in old] + [
        f"{what} removed: {x}" for x in old if x not in new
    ]


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _corrupt(source: str, what: str) -> LockError:
    return LockError(f"{source}: {what}", hint=_RELOCK_HINT)


class _Invalid(Exception):
    """A value in the lock does not have the type the model needs."""


def _convert(tp: Any, value: object, where: str) -> Any:
    """`value` (parsed JSON) as type `tp` from the lock model; raises _Invalid naming `where`."""
    label = where or "the top level"
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(tp, value, where)
    if tp is str or tp is int:
        if type(value) is not tp:
            raise _Invalid(f"{label}: expected {_json_type(tp)}, found {_json_type(type(value))}")
        return value
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise _Invalid(f"{label}: expected a list, found {_json_type(type(value))}")
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise _Invalid(f"{label}: expected {len(args)} items, found {len(value)}")
        return tuple(
            _convert(t, v, f"{where}[{i}]")
            for i, (t, v) in enumerate(zip(args, value, strict=True))
        )
    raise TypeError(f"lock model type not handled: {tp!r}")  # a bug in the model, not the file


def _convert_dataclass(cls: type[_T], value: object, where: str) -> _T:
    if not isinstance(value, dict):
        raise _Invalid(f"{where or 'the top level'}: expected an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    prefix = f"{where}." if where else ""
    unknown = sorted(set(value) - fields.keys())
    if unknown:
        raise _Invalid(f"unknown key `{prefix}{unknown[0]}`")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], f"{prefix}{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _Invalid(f"missing key `{prefix}{name}`")
    return cls(**kwargs)


def _json_type(tp: type) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a number"}
    names |= {list: "a list", dict: "an object", types.NoneType: "null"}
    return names.get(tp, tp.__name__)


def lock_differences(lock: LockFile, section: EnvironmentSection) -> list[str]:
    """What an environment's packages contradict in a lock (exact names and versions)."""
    installed = {p.name: p.version for p in section.python_packages}
    locked = {canonicalize_name(p.name): p.version for p in lock.python}
    out = []
    for name, version in sorted(locked.items()):
        if name not in installed:
            out.append(f"{name}=={version} (pinned by envd.lock) is not installed")
        elif installed[name] != version:
            out.append(f"{name} is {installed[name]}, envd.lock pins {version}")
    debs = {p.name: p.version for p in section.debian_packages}
    for package in lock.system:
        if debs.get(package.name) != package.version:
            out.append(
                f"Debian package {package.name} is {debs.get(package.name, 'missing')}, "
                f"envd.lock pins {package.version}"
            )
    return out
