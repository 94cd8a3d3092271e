"""`envctl lock`: from envd.yaml to envd.lock (base pinned, target read, everything resolved).

The pieces are elsewhere (debian_base, target, gateways.uv, apt, cuda, lockio); this module only
puts them in order and makes sure a failure leaves the previous lock untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, canonicalize_version

from envd import __version__
from envd.errors import LockError, LockStale, Unresolvable
from envd.events import EventBus
from envd.gateways import uv
from envd.gateways.engine import Engine
from envd.gateways.files import write_atomic
from envd.gateways.store import ProjectRow, Store
from envd.model.apt import (
    Addition,
    installed_script,
    loads_needs,
    needs_key,
    parse_installed,
    parse_simulated_install,
    resolve_script,
    system_additions,
)
from envd.model.cuda import accelerator_variant, min_driver_for_cuda, torch_pypi_cuda_constraint
from envd.model.direct import with_url
from envd.model.lockfile import (
    BaseLock,
    DebianPackage,
    LockEdited,
    LockFile,
    PythonPackage,
    dumps,
    hash_inputs,
    inputs_from_spec,
)
from envd.model.pythons import AUTO
from envd.model.setupmeta import ComputedMetadata
from envd.model.spec import LOCK_FILENAME, Base, FilePin, Spec
from envd.model.spec_requirements import BadRequirement, check_requirement
from envd.model.target import check_python, inspect_target
from envd.progress import Progress, Reporter
from envd.services import setup_container
from envd.services.debian_base import DEFAULT_MIRROR, ensure_debian_base
from envd.services.direct import DirectFiles
from envd.services.projects import LockState, Projects, ProjectSnapshot, lock_path
from envd.services.python_choice import Resolve, choose, explain
from envd.services.resolutions import Resolutions


@dataclass(frozen=True)
class LockOutcome:
    path: Path
    lock: LockFile | None
    changed: bool
    in_sync: bool
    reasons: tuple[str, ...]


class Locker:
    def __init__(
        self,
        projects: Projects,
        engine: Engine,
        events: EventBus,
        target_cache: Store,
        cache_dir: Path,
    ) -> None:
        self._projects = projects
        self._engine = engine
        self._events = events
        self._target_cache = target_cache  # the Python target read from a base, by its digest
        self._cache_dir = cache_dir
        self._direct = DirectFiles(cache_dir / "urls")
        # uv's answers by their question, so an unchanged lock is not resolved again.
        self._resolutions = Resolutions(
            target_cache, lambda *a, **k: uv.resolve(*a, **k), uv.uv_version
        )

    # ------------------------------------------------------------ public

    def check(self, row: ProjectRow, snapshot: ProjectSnapshot | None = None) -> LockOutcome:
        """Compare envd.lock with envd.yaml; raise LockStale naming every reason."""
        state = (snapshot or self._projects.snapshot(row)).state
        if state.lock is None:
            raise LockStale(f"{state.path} does not exist", hint=f"run `envctl lock {row.name}`")
        if state.reasons:
            raise LockStale(
                f"{state.path} is out of date: " + "; ".join(state.reasons),
                hint=f"run `envctl lock {row.name}` and commit envd.lock",
            )
        return LockOutcome(state.path, state.lock, changed=False, in_sync=True, reasons=())

    def record_environment(
        self, row: ProjectRow, built_from: LockFile, environment_hash: str
    ) -> None:
        """Write the first build's environment hash into envd.lock (only into the same pins)."""
        state = self._projects.lock_state(row)
        current = state.lock
        if current is None or current.environment_hash or not _same_pins(current, built_from):
            return
        write_atomic(state.path, dumps(replace(current, environment_hash=environment_hash)))
        self._events.publish(
            "project.locked", row.name, str(state.path), environment=environment_hash
        )

    def ensure_lock(
        self,
        row: ProjectRow,
        progress: Reporter,
        write: bool = True,
        snapshot: ProjectSnapshot | None = None,
    ) -> LockFile:
        """The project's lock: made when missing, refused when stale (never silently rewritten)."""
        snapshot = snapshot or self._projects.snapshot(row)
        if snapshot.lock is None:
            progress(Progress("lock", f"no {LOCK_FILENAME} yet: locking {row.name}"))
            outcome = self.lock(row, progress, write=write)
            assert outcome.lock is not None
            return outcome.lock
        outcome = self.check(row, snapshot)
        assert outcome.lock is not None
        return outcome.lock

    def lock(
        self,
        row: ProjectRow,
        progress: Reporter,
        *,
        upgrade: bool = False,
        upgrade_packages: tuple[str, ...] = (),
        write: bool = True,
    ) -> LockOutcome:
        """Resolve envd.yaml into envd.lock (`write=False`: resolve only, e.g. for a dry run)."""
        spec = self._projects.spec(row)
        edited: tuple[str, ...] = ()
        try:
            state = self._projects.lock_state(row, spec)
        except LockEdited as exc:  # re-resolve: the edited pins are not kept
            edited = exc.edited
            kept = tuple(p for p in exc.lock.python if p.name not in edited)
            previous_lock = replace(exc.lock, python=kept)
            state = LockState(lock_path(row), previous_lock, (exc.message,))
        path, previous = state.path, state.lock
        previous_text = dumps(previous) if previous is not None and not edited else None
        inputs = inputs_from_spec(spec)
        reasons = state.reasons if previous else ("new lock",)
        if previous is not None and not reasons and not _pins_hold(previous.python, spec.pins):
            reasons = ("the hashes in a requirements file changed",)
        if previous is not None and not reasons:
            lacking = self._additions(spec, previous.python, previous.base, previous.system)
            if lacking:
                reasons = tuple(a.notice().replace("added", "the lock lacks", 1) for a in lacking)
        if previous is not None and not reasons and not upgrade and not upgrade_packages:
            # In sync: nothing to resolve (`--upgrade` re-resolves on purpose).
            return LockOutcome(path, previous, changed=False, in_sync=True, reasons=())

        direct, requirements = self._direct_files(spec, progress)
        resolver = self._resolver(spec, direct)
        if spec.python == AUTO:
            spec = self._choose_python(spec, resolver, requirements, progress)
        base = self._base(spec, previous, upgrade, progress)
        progress(Progress("target", "reading the Python target from the base image"))
        target = inspect_target(
            self._engine,
            base.reference or base.digest,
            cache=self._target_cache,
            cache_key=f"target:{base.digest}",
        )
        check_python(spec.python, target, f"{row.path}/envd.yaml", base=base.reference)
        if spec.cuda:
            target = replace(
                target,
                accelerator=accelerator_variant(spec.cuda),
                min_driver=min_driver_for_cuda(spec.cuda),
            )
        system = self._system(spec, base, progress)
        computed = self._computed_metadata(row, spec, previous, base, progress, upgrade)
        requirements = requirements + _computed_requirements(computed)
        progress(
            Progress("resolve", f"resolving {len(spec.all_requirements)} requirements with uv")
        )
        keep = () if upgrade or previous is None else previous.python
        try:
            python = self._resolutions.resolve(
                requirements,
                python_version=target.python_version,
                platform=target.platform,
                indexes=spec.indexes,
                preferences=keep,
                upgrade=upgrade,
                upgrade_packages=upgrade_packages,
                cache_dir=str(self._cache_dir / "uv"),
                extra_constraints=_cuda_constraints(spec) + spec.constraints,
                from_source=spec.from_source,
                direct=direct,
            )
        except Unresolvable as exc:  # name the Pythons (and bases) the pins would work with
            progress(Progress("resolve", "looking for the Pythons the pins have wheels for"))
            raise explain(exc, resolver, requirements, target.python_version, self._arch()) from exc
        python = keep_file_hashes(python, spec.pins)
        additions = self._additions(spec, python, base, system)
        if additions:  # (checked here, where the pins are known, so the first build works)
            for addition in additions:
                progress(Progress("system", addition.notice()))
            extra = tuple(a.package for a in additions)
            if base.kind == "debian":
                base = self._base(spec, previous, False, progress, extra)
            system = self._system(spec, base, progress, extra)
        lock = LockFile(
            envd_version=__version__,
            uv_version=uv.uv_version(),
            inputs=inputs,
            inputs_hash=hash_inputs(inputs),
            target=target,
            base=base,
            system=system,
            python=python,
            shared_image=_kept_shared_image(previous, base),
            computed=computed,
        )
        if previous is not None and not edited and _same_pins(previous, lock):
            lock = replace(lock, environment_hash=previous.environment_hash)
        text = dumps(lock)
        changed = text != previous_text
        if not write:
            return LockOutcome(path, lock, changed=changed, in_sync=not changed, reasons=reasons)
        if changed:
            write_atomic(path, text)
        self._events.publish("project.locked", row.name, str(path), changed=str(changed))
        return LockOutcome(path, lock, changed=changed, in_sync=True, reasons=reasons)

    # ------------------------------------------------------------ pieces

    def _computed_metadata(
        self,
        row: ProjectRow,
        spec: Spec,
        previous: LockFile | None,
        base: BaseLock,
        progress: Reporter,
        again: bool,
    ) -> ComputedMetadata:
        """setup.py's computed metadata (empty when it is read statically): the previous
        lock's while the files it comes from are unchanged, else computed by the legacy
        backend in a throwaway container of the base image (never on the host)."""
        if not spec.computed:
            return ComputedMetadata()
        if (
            not again
            and previous is not None
            and previous.inputs.computed == spec.computed
            and previous.computed.files == spec.computed
        ):
            return previous.computed
        progress(
            Progress(
                "project",
                "setup.py computes its metadata: running the PEP 517 legacy backend in a "
                "throwaway container of the base image (no network, the project copied in "
                "read-only)",
            )
        )
        result = setup_container.compute(
            self._engine,
            base.reference or base.digest,
            Path(row.path),
            self._cache_dir / "setup-metadata",
            project=row.name,
            watched=spec.computed,
        )
        meta = result.metadata
        progress(
            Progress(
                "project",
                f"computed in a container by {meta.backend}: {meta.name} {meta.version}, "
                f"{len(meta.requires)} requirement(s)",
            )
        )
        if result.unwatched:
            progress(
                Progress(
                    "project",
                    "note: setup.py also read "
                    + ", ".join(result.unwatched[:5])
                    + ", which envd.lock does not hash (a change there does not make the "
                    "lock stale: `envctl lock --upgrade` computes it again)",
                )
            )
        return meta

    def _resolver(self, spec: Spec, direct: dict[str, PythonPackage]) -> Resolve:
        """uv's resolution of some requirements for a Python and platform other than the
        base's (to choose a Python, or to say which would work)."""

        def resolve(requirements: Sequence[str], python_version: str, platform: str) -> object:
            return self._resolutions.resolve(
                requirements,
                python_version=python_version,
                platform=platform,
                indexes=spec.indexes,
                cache_dir=str(self._cache_dir / "uv"),
                extra_constraints=_cuda_constraints(spec) + spec.constraints,
                from_source=spec.from_source,
                direct=direct,
            )

        return resolve

    def _choose_python(
        self, spec: Spec, resolver: Resolve, requirements: Sequence[str], progress: Reporter
    ) -> Spec:
        """`python: auto`: the spec with the newest Python envd can build that fits the pins."""
        progress(Progress("python", "python: auto: trying the Pythons envd builds, newest first"))
        choice = choose(resolver, requirements, self._arch())
        progress(Progress("python", choice.text, log=True))
        return replace(spec, base=Base(debian=choice.chosen.suite), python=choice.chosen.python)

    def _arch(self) -> str:
        return self._engine.info().arch or "x86_64"

    def _direct_files(
        self, spec: Spec, progress: Reporter
    ) -> tuple[dict[str, PythonPackage], tuple[str, ...]]:
        """Each direct URL requirement's file, downloaded and verified: the lock's entries, and
        the requirements with those URLs pointing at the verified local copies (for uv)."""
        locked: dict[str, PythonPackage] = {}
        local: dict[str, str] = {}
        for requirement in spec.direct:
            progress(Progress("resolve", f"downloading {requirement.url}"))
            package, path = self._direct.lock(requirement)
            other = locked.get(package.name)
            if other is not None and other != package:
                raise LockError(
                    f"{requirement.where}: {package.name} is named by two different direct "
                    f"URLs ({other.url} and {package.url})",
                    hint="name each package by one URL",
                )
            locked[package.name] = package
            local[requirement.requirement] = with_url(requirement.requirement, path.as_uri())
        return locked, tuple(local.get(r, r) for r in spec.all_requirements)

    def _additions(
        self,
        spec: Spec,
        python: tuple[PythonPackage, ...],
        base: BaseLock,
        system: tuple[DebianPackage, ...],
    ) -> tuple[Addition, ...]:
        """The Debian packages the pins need that neither `system:` nor the base has."""
        pins = [(canonicalize_name(p.name), p.version) for p in python]
        learned = {
            f"{n}=={v}": loads_needs(self._target_cache.get(needs_key(f"{n}=={v}")))
            for n, v in pins
        }
        have = [name.split("=", 1)[0] for name in spec.system]
        have += [p.name for p in base.packages] + [p.name for p in system]
        additions = system_additions(pins, learned, have)
        if additions and base.kind == "image":
            # A registry image may have them already (its packages are not in the lock).
            additions = system_additions(pins, learned, have + self._installed(base))
        return additions

    def _installed(self, base: BaseLock) -> list[str]:
        """The Debian packages a registry-image base has installed (none when it has no dpkg)."""
        key = f"dpkg:{base.digest}"
        cached = self._target_cache.get(key)
        if cached is None:
            result = self._engine.run(base.digest, list(installed_script()), user="0")
            cached = result.output if result.exit_code == 0 else ""
            self._target_cache.put(key, cached)
        return parse_installed(cached)

    def _base(
        self,
        spec: Spec,
        previous: LockFile | None,
        upgrade: bool,
        progress: Reporter,
        extra: tuple[str, ...] = (),
    ) -> BaseLock:
        if spec.base.debian:
            return ensure_debian_base(
                self._engine,
                spec.base.debian,
                [*spec.system, *extra],
                DEFAULT_MIRROR,
                self._cache_dir / "debian",
                progress=progress,
                refresh=upgrade,  # --upgrade takes the mirror's packages of today
            )
        reference = spec.base.image or ""
        image = self._engine.inspect_image(reference)
        if image is None:
            progress(Progress("base", f"pulling {reference}"))
            image = self._engine.pull(reference)
        digest = image.repo_digests[0] if image.repo_digests else image.id
        if (
            previous is not None
            and not upgrade
            and previous.base.kind == "image"
            and previous.base.reference == reference
            and previous.base.digest != digest
        ):
            # The tag moved on; the lock keeps what it pinned when that image is still here.
            pinned = self._engine.inspect_image(previous.base.digest)
            if pinned is not None:
                return previous.base
        return BaseLock(kind="image", reference=reference, digest=digest)

    def _system(
        self, spec: Spec, base: BaseLock, progress: Reporter, extra: tuple[str, ...] = ()
    ) -> tuple[DebianPackage, ...]:
        names = [*spec.system, *extra]
        if not names:
            return ()
        if base.kind == "debian":
            wanted = {name.split("=", 1)[0] for name in names}
            return tuple(p for p in base.packages if p.name in wanted)
        progress(Progress("system", f"resolving {len(names)} Debian packages with apt"))
        result = self._engine.run(base.digest, resolve_script(names), user="0")
        if result.exit_code != 0:
            raise LockError(
                f"apt could not resolve {', '.join(names)} on {base.reference}:\n"
                + "\n".join(result.output.splitlines()[-10:]),
                hint="check the package names (`apt-cache search NAME` on a Debian machine)",
            )
        return parse_simulated_install(result.output)


def keep_file_hashes(
    python: tuple[PythonPackage, ...], pins: tuple[FilePin, ...]
) -> tuple[PythonPackage, ...]:
    """The resolution, with each pinned package restricted to the hashes its file gives.

    A requirements file (or a uv.lock, Pipfile.lock, pylock.toml) that names sha256 digests
    allows only those artifacts, as pip does: every digest must be one the index offers for
    that version (else the file and the index disagree: refused, naming the file and line),
    and the lock keeps exactly those digests.
    """
    wanted: dict[tuple[str, str], list[FilePin]] = {}
    for pin in pins:
        if pin.sha256:
            wanted.setdefault((pin.name, _version_key(pin.version)), []).append(pin)
    out = []
    for package in python:
        file_pins = wanted.get((package.name, _version_key(package.version)))
        if not file_pins:
            out.append(package)
            continue
        digests = {f"sha256:{d}" for pin in file_pins for d in pin.sha256}
        missing = sorted(digests - set(package.hashes))
        if missing:
            pin = next(p for p in file_pins if f"sha256:{p.sha256[0]}" in digests)
            where = pin.source if pin.line is None else f"{pin.source}:{pin.line}"
            index = package.index or "PyPI"
            raise LockError(
                f"{where}: {package.name}=={package.version} has --hash {missing[0]}, which "
                f"matches none of the artifacts {index} offers for that version "
                f"({len(package.hashes)} artifacts)",
                hint="regenerate the file's hashes from the index it was locked against "
                "(e.g. `uv pip compile --generate-hashes`), or add that index to `indexes:`",
            )
        out.append(replace(package, hashes=tuple(sorted(digests))))
    return tuple(out)


def _pins_hold(python: tuple[PythonPackage, ...], pins: tuple[FilePin, ...]) -> bool:
    """Whether a lock still carries exactly the hashes the requirements files pin."""
    locked = {(p.name, _version_key(p.version)): set(p.hashes) for p in python}
    wanted: dict[tuple[str, str], set[str]] = {}
    for pin in pins:
        if pin.sha256:
            wanted.setdefault((pin.name, _version_key(pin.version)), set()).update(
                f"sha256:{d}" for d in pin.sha256
            )
    # A version no longer locked is a changed requirement, which the lock's inputs name.
    return all(locked.get(key, digests) == digests for key, digests in wanted.items())


def _computed_requirements(computed: ComputedMetadata) -> tuple[str, ...]:
    """The computed Requires-Dist, checked as envd checks every requirement."""
    out = []
    for text in computed.requires:
        try:
            out.append(check_requirement(text))
        except BadRequirement as exc:
            raise LockError(
                f"setup.py's computed install_requires: `{text}`: {exc.message}", hint=exc.hint
            ) from None
    return tuple(out)


def _version_key(version: str) -> str:
    return canonicalize_version(version, strip_trailing_zero=True)


def _cuda_constraints(spec: Spec) -> tuple[str, ...]:
    if not spec.cuda:
        return ()
    names = {canonicalize_name(Requirement(r).name) for r in spec.all_requirements}
    if "torch" not in names:
        return ()
    constraint = torch_pypi_cuda_constraint(spec.cuda)
    if constraint is None:
        raise LockError(
            f"no torch release on PyPI is built for CUDA {spec.cuda} or older",
            hint="raise `cuda:`, or add the PyTorch index for your CUDA to `indexes:`",
        )
    return (constraint,)


def _same_pins(a: LockFile, b: LockFile) -> bool:
    """Whether two locks pin the same environment (so a recorded environment hash still holds)."""
    return (a.base, a.target, a.system, a.python, a.inputs) == (
        b.base,
        b.target,
        b.system,
        b.python,
        b.inputs,
    )


def _kept_shared_image(previous: LockFile | None, base: BaseLock) -> str:
    """A pinned shared image survives a re-lock only while the base is the same."""
    if previous is None or previous.base != base:
        return ""
    return previous.shared_image
