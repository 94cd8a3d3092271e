"""Runs a build plan's steps on the engine: one container per step, committed as a layer.

Caches (uv, apt archives) are named volumes mounted into steps and never committed; the host
CA bundle and the uv binary are bind-mounted read-only, so neither is ever baked into an image.
On a remote engine the gateway turns those binds into read-only copies in volumes of their own
(Engine.run), removed with each step's container: still never in a committed layer.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from envd.errors import BuildFailed, EnvdError
from envd.gateways import debian_contents, urls, uv
from envd.gateways.engine import CommitSpec, Engine, Mount
from envd.gateways.store import Store
from envd.gateways.trust import host_ca_bundle
from envd.model import libraries, names
from envd.model import plan as p
from envd.model.apt import DEBIAN_ARCHES, dumps_needs, needs_key
from envd.model.content import LayerSummary
from envd.model.direct import DIRECT_DIR
from envd.model.layerchanges import summarise_changes
from envd.model.lockfile import LockFile
from envd.progress import Progress, Reporter
from envd.services.content import ContentHasher
from envd.services.debian_base import DEFAULT_MIRROR, restore_debian_base
from envd.services.direct import DirectFiles

log = logging.getLogger(__name__)

STEP_ROLE = {names.ROLE_LABEL: names.ROLE_STEP}
# Under the envd home's namespace: step images NAMESPACE/cache:KEY, volumes NAMESPACE-uv-cache.
CACHE_REPOSITORY = names.CACHE_REPOSITORY
UV_VOLUME = names.UV_CACHE_VOLUME
APT_VOLUME = names.APT_ARCHIVES_VOLUME
MAX_CHECK_LINES = 200_000  # of the shared-library check's output (a line per shared object)
# Steps whose new layer is summarised from what their container changed, as it is committed
# (envd.model.layerchanges), so no later fingerprint streams the whole image to read it. Only
# envd's own commands: they write new files and never only re-own a folder they did not make.
CHANGES_READ = ("venv", "packages", "metadata")
# Files the engine binds into every container (the archive API shows them, a commit does not).
ENGINE_BINDS = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")

# Labels for the image from the parent of its last step (the fingerprint, set in that commit).
MetadataLabels = Callable[[str, LockFile], dict[str, str]]


@dataclass(frozen=True)
class StepOutcome:
    name: str
    key: str
    cached: bool
    summary: str


@dataclass(frozen=True)
class StepsRun:
    image_id: str  # the last step's image, untagged
    steps: tuple[StepOutcome, ...]


def prepare_run_dir(run_dir: Path, requirements: str) -> None:
    """What steps see at /mnt: uv, the host CA bundle and the hashed requirements (host only)."""
    (run_dir / "requirements.txt").write_text(requirements)
    binary = Path(uv.binary())
    try:
        os.link(binary.resolve(), run_dir / "uv")
    except OSError:  # another filesystem: copy instead
        shutil.copy2(binary, run_dir / "uv")
    bundle = host_ca_bundle()
    if bundle:
        shutil.copyfile(bundle, run_dir / "ca.pem")
    run_dir.chmod(0o755)


def prepare_files_dir(
    folder: Path, run_dir: Path, files: tuple[p.StepFile, ...], contents: Mapping[str, bytes]
) -> None:
    """What a step with its own files sees at /mnt instead of the run dir: the CA bundle, and
    a private copy of exactly the bytes its plan's digests name at /mnt/workspace. (A mount
    at a path the image lacks, even nested in another mount, leaves its mount point behind in
    the committed layer; /mnt itself exists.)"""
    folder.mkdir(mode=0o755)
    if (run_dir / "ca.pem").exists():
        shutil.copyfile(run_dir / "ca.pem", folder / "ca.pem")
    workspace = folder / Path(p.STEP_FILES).relative_to(p.RUN_DIR)
    workspace.mkdir(mode=0o755)
    for f in files:
        path = workspace / f.path
        if not path.resolve().is_relative_to(workspace.resolve()):
            raise ValueError(f"step file {f.path} is outside its folder")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_bytes(contents[f.sha256])
        path.chmod(0o755 if f.executable else 0o644)


class StepRunner:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        owner: str,
        debian_cache: Path,
        namespace: str = "envd",
        scratch: Path | None = None,
        url_cache: Path | None = None,
        content: ContentHasher | None = None,
    ) -> None:
        self._engine = engine
        self._content = content  # where a new layer's summary is kept, by its diff-id
        self._store = store
        self._owner = owner  # which daemon's step containers these are
        self._debian_cache = debian_cache
        self._namespace = namespace  # caches are this home's own: no other home writes them
        self._scratch = scratch  # where the private per-build folder goes (None: the system's)
        # The verified files of direct URL packages, shared with the locker (cache/urls).
        self._direct = DirectFiles(url_cache or debian_cache.parent / "urls")

    def cached(self, key: str) -> str | None:
        """A step's image when it is recorded and still on the engine (else forget it)."""
        image_id = self._store.step_image(key)
        if image_id is None:
            return None
        if self._engine.inspect_image(image_id) is None:
            self._store.drop_step(key)
            return None
        return image_id

    def cached_prefix(self, plan: p.BuildPlan) -> tuple[int, str | None]:
        """(index, image) of the last step whose image is cached; (0, None) for none."""
        for index in range(len(plan.steps) - 1, 0, -1):
            image = self.cached(plan.steps[index].key)
            if image is not None:
                return index, image
        return 0, None

    def dry_run(self, lock: LockFile, plan: p.BuildPlan) -> tuple[StepOutcome, ...]:
        """Which steps a build would take from the cache, asking the engine only."""
        # What base_image would use: a Debian base by its tag, an image base by its digest.
        base = lock.base.reference if lock.base.kind == "debian" else lock.base.digest
        return tuple(
            StepOutcome(
                s.name,
                s.key,
                self._engine.image_exists(base)
                if s.name == "base"
                else self.cached(s.key) is not None,
                s.summary,
            )
            for s in plan.steps
        )

    def run(
        self,
        project: str,
        lock: LockFile,
        plan: p.BuildPlan,
        progress: Reporter,
        metadata_labels: MetadataLabels,
        previous_image: str = "",
        contents: Mapping[str, bytes] | None = None,
    ) -> StepsRun:
        """`contents`: the bytes of the files steps name, by sha256 (see Step.files)."""
        started = time.monotonic()
        outcomes = [StepOutcome("base", plan.steps[0].key, True, plan.steps[0].summary)]
        # The longest cached prefix, looked up from the last step (it may have come from a
        # team cache without the images before it): the base is needed only below it.
        last, cached_image = self.cached_prefix(plan)
        parent = cached_image or self._base_image(lock, progress)
        if self._scratch is not None:
            self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=self._scratch) as tmp:
            run_dir = Path(tmp) / "mnt"
            run_dir.mkdir()
            prepare_run_dir(run_dir, plan.requirements)
            previous_key = plan.steps[0].key
            previous_name = plan.steps[0].name
            for index, step in enumerate(plan.steps[1:], start=1):
                if index <= last:  # (in the image `parent` already is)
                    progress(Progress(step.name, f"cached: {step.summary}"))
                    outcomes.append(StepOutcome(step.name, step.key, True, step.summary))
                    previous_key, previous_name = step.key, step.name
                    continue
                if previous_name == "packages":
                    # (also when the packages step was cached: a failed check left it so)
                    self.check_libraries(project, lock, parent, progress, previous_image)
                progress(
                    Progress(
                        step.name, f"running: {step.summary}", elapsed_s=time.monotonic() - started
                    )
                )
                extra: dict[str, str] = {}
                if step.name == "packages":
                    self._place_direct(lock, run_dir, progress)
                if step.name == "metadata":
                    progress(Progress("fingerprint", "reading the environment's fingerprint"))
                    extra = metadata_labels(parent, lock)
                before = self._size(parent)
                files_dir: Path | None = None
                if step.files:
                    files_dir = Path(tmp) / f"files-{len(outcomes)}"
                    made = {**dict(plan.generated), **(contents or {})}
                    prepare_files_dir(files_dir, run_dir, step.files, made)
                parent = self._run_step(
                    project,
                    plan,
                    step,
                    parent,
                    run_dir,
                    progress,
                    extra,
                    previous_image,
                    files_dir,
                )
                # A step owns only its own layer; the image's size counts every parent's too.
                self._store.record_step(
                    step.key, previous_key, step.name, parent, max(self._size(parent) - before, 0)
                )
                outcomes.append(StepOutcome(step.name, step.key, False, step.summary))
                previous_key, previous_name = step.key, step.name
        return StepsRun(parent, tuple(outcomes))

    def check_libraries(
        self, project: str, lock: LockFile, image: str, progress: Reporter, previous_image: str
    ) -> None:
        """Fail the build naming every shared library that what Python loads links and the
        image lacks (the rule: envd.model.libraries), in a container of the packages step's
        image (no network, no commit). What envd can fix is remembered for the next lock."""
        progress(Progress("libraries", "checking the shared libraries Python packages link"))
        lines: list[str] = []

        def collect(line: str) -> None:
            if len(lines) < MAX_CHECK_LINES:
                lines.append(line)

        site = p.site_packages(lock.target.python_version)
        result = self._engine.run(
            image,
            libraries.check_argv(p.VENV, site),
            network=False,
            user="0",
            labels={**STEP_ROLE, names.PROJECT_LABEL: project, names.OWNER_LABEL: self._owner},
            on_output=collect,
        )
        report = libraries.judge("\n".join(lines))
        if result.exit_code != 0 and not report.failures:
            progress(Progress("libraries", f"the check could not run (exit {result.exit_code})"))
            return
        if report.notes:
            progress(Progress("libraries", "note: " + libraries.notes_message(report.notes)))
        if not report.failures:
            return
        packages = self._library_packages(lock, report.failures, progress)
        needed = libraries.needed_packages(report.failures, packages)
        for pinned, pairs in needed.items():
            self._store.put(needs_key(pinned), dumps_needs(pairs))
        fix = (
            f"run `envctl lock {project}`: it adds the Debian packages named above to the "
            "lock's system packages (or name them in `system:` in envd.yaml)"
            if needed
            else "add the Debian packages that provide them to `system:` in envd.yaml, then "
            f"`envctl lock {project}`"
        )
        raise BuildFailed(
            f"{project}: Python packages need shared libraries the image lacks:\n"
            + libraries.failure_message(report.failures, packages),
            hint=(
                f"the previous image {previous_image} is still usable; " if previous_image else ""
            )
            + fix
            + ", and build again",
        )

    def _library_packages(
        self, lock: LockFile, failures: tuple[libraries.MissingLibrary, ...], progress: Reporter
    ) -> dict[str, str]:
        """soname -> Debian package: envd's table, then the locked suite's Contents index for
        the sonames the table does not know (a Debian base only: a registry image's suite is
        not in the lock)."""
        packages = dict(libraries.SONAME_PACKAGES)
        unknown = sorted({m.soname for m in failures} - packages.keys())
        arch = DEBIAN_ARCHES.get(lock.target.arch)
        if not unknown or lock.base.kind != "debian" or not lock.base.suite or arch is None:
            return packages
        progress(Progress("libraries", f"looking up {', '.join(unknown)} in Debian's Contents"))
        try:
            packages.update(
                debian_contents.lookup(
                    lock.base.mirror or DEFAULT_MIRROR,
                    lock.base.suite,
                    arch,
                    unknown,
                    self._debian_cache / "contents",
                )
            )
        except urls.UrlUnreachable as exc:
            progress(Progress("libraries", f"no Contents index: {exc.message}"))
        return packages

    def _place_direct(self, lock: LockFile, run_dir: Path, progress: Reporter) -> None:
        """The files of the lock's direct URL packages, at /mnt/direct for the packages step:
        each exactly the bytes the lock's sha256 names (uv checks that hash again)."""
        folder = run_dir / Path(DIRECT_DIR).relative_to(p.RUN_DIR)
        for package in lock.python:
            if package.url:
                progress(Progress("packages", f"{package.name} {package.version}: {package.url}"))
                self._direct.place(package, folder)

    def _size(self, image: str) -> int:
        info = self._engine.inspect_image(image)
        return info.size if info else 0

    def _base_image(self, lock: LockFile, progress: Reporter) -> str:
        if lock.base.kind == "debian":
            system = list(lock.inputs.system)  # as written in envd.yaml: the same cache key
            return restore_debian_base(
                self._engine, lock.base, system, self._debian_cache, progress=progress
            )
        image = self._engine.inspect_image(lock.base.digest)
        if image is None:
            progress(Progress("base", f"pulling {lock.base.digest}"))
            image = self._engine.pull(lock.base.digest)
        return image.id

    def _run_step(
        self,
        project: str,
        plan: p.BuildPlan,
        step: p.Step,
        parent: str,
        run_dir: Path,
        progress: Reporter,
        extra_labels: dict[str, str],
        previous_image: str,
        files_dir: Path | None = None,
    ) -> str:
        mounts: list[Mount] = []
        if files_dir is not None:  # (a step with files never uses uv)
            mounts.append(Mount(str(files_dir), p.RUN_DIR, read_only=True))
        elif step.uses_ca or step.uses_uv:
            mounts.append(Mount(str(run_dir), p.RUN_DIR, read_only=True))
        if step.uses_uv:
            mounts.append(Mount(self._volume(UV_VOLUME), p.UV_CACHE_MOUNT, volume=True))
        if step.uses_apt_cache:
            mounts.append(Mount(self._volume(APT_VOLUME), p.APT_CACHE_MOUNT, volume=True))
        final = step.name == "metadata"
        made: list[LayerSummary | None] = []

        def read_layer(container_id: str) -> None:
            made.append(self._layer_from_changes(container_id, mounts))

        # Docker only: Podman's changes list differs from its committed layer (it adds
        # /run/.containerenv and /etc/mtab there), so on Podman the layer is read instead.
        changes_read = (
            self._content is not None
            and step.name in CHANGES_READ
            and self._engine.product == "Docker"
        )
        commit = CommitSpec(
            repository=f"{self._namespace}/{CACHE_REPOSITORY}",
            tag=step.key[:24],
            labels={**dict(plan.labels), **extra_labels, **_role(names.ROLE_IMAGE, step.name)}
            if final
            else _role(names.ROLE_LAYER, step.name),
            env=dict(plan.env) if final else {},
            cmd=p.IDLE_CMD if final else (),
            workdir=p.WORKDIR if final else "",
            before=read_layer if changes_read else None,
        )

        def log(line: str) -> None:
            progress(Progress(step.name, line, log=True))

        result = self._engine.run(
            parent,
            list(step.argv),
            mounts=mounts,
            network=step.network,
            user="0",
            labels={**STEP_ROLE, names.PROJECT_LABEL: project, names.OWNER_LABEL: self._owner},
            on_output=log,
            commit=commit,
        )
        if result.exit_code != 0:
            tail = "\n".join(result.output.splitlines()[-20:])
            raise BuildFailed(
                f"build step `{step.name}` of {project} failed (exit {result.exit_code}): "
                f"{step.summary}\n{tail}",
                hint=(
                    f"the previous image {previous_image} is still usable; "
                    if previous_image
                    else ""
                )
                + "fix envd.yaml and build again",
            )
        if made and made[0] is not None:
            self._keep_summary(result.image_id, made[0])
        return result.image_id

    def _layer_from_changes(self, container_id: str, mounts: list[Mount]) -> LayerSummary | None:
        """The summary of the layer the commit of `container_id` makes; None where it must be
        read from the layer's bytes (or the engine could not say)."""
        targets = [*ENGINE_BINDS, *(m.target for m in mounts)]
        try:
            return self._engine.read_changes(
                container_id,
                lambda changes, open_path: summarise_changes(changes, open_path, targets),
            )
        except (EnvdError, ValueError) as exc:  # (ContentError: an unreadable archive)
            log.info("the changes of %s are read from the layer instead: %s", container_id, exc)
            return None

    def _keep_summary(self, image_id: str, summary: LayerSummary) -> None:
        """Keep the summary under the diff-id the engine reports for the image's new layer."""
        info = self._engine.inspect_image(image_id)
        if self._content is None or info is None or not info.layers:
            return
        if not self._content.has_summary(info.layers[-1]):
            self._content.add_summary(info.layers[-1], summary)

    def _volume(self, name: str) -> str:
        return self._engine.ensure_volume(names.home_volume(self._namespace, name))

    def cleanup_orphans(self) -> int:
        """Remove step containers a killed daemon of this $ENVD_HOME left behind, and the
        copies of its folders a remote engine held for them (volumes labelled envd.role=mount)."""
        removed = 0
        steps = names.label_filter(names.ROLE_LABEL, names.ROLE_STEP)
        mounts = names.label_filter(names.ROLE_LABEL, names.ROLE_MOUNT)
        for container in self._engine.list_containers(steps):
            if container.labels.get(names.OWNER_LABEL) == self._owner:  # not another daemon's
                self._engine.remove_container(container.id)
                removed += 1
        for name, labels in self._engine.list_volumes(mounts):
            if labels.get(names.OWNER_LABEL) == self._owner:
                self._engine.remove_volume(name)
        return removed


def _role(role: str, step: str) -> dict[str, str]:
    """Committed images would inherit the step container's labels: say what they are."""
    return {names.ROLE_LABEL: role, names.STEP_LABEL: step}
