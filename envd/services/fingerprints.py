"""Computing, storing and comparing fingerprints of images, containers, runs and the host."""

from __future__ import annotations

import json
import time

from envd.errors import NotFound, VerificationError
from envd.gateways.engine import Engine, ImageInfo
from envd.gateways.projectfiles import read_user_file
from envd.gateways.store import ProjectRow, Store
from envd.model.content import Manifest, is_excluded
from envd.model.fingerprint import (
    Change,
    EnvironmentSection,
    Fingerprint,
    FingerprintDiff,
    HostGpu,
    HostSection,
    diff_fingerprints,
    dumps,
    environment_from_manifest,
    loads,
    make_fingerprint,
    section_hash,
)
from envd.model.inventory import diff_manifests, file_owners
from envd.model.lockfile import LockFile
from envd.model.names import BASE_DIGEST_LABEL, FINGERPRINT_LABEL
from envd.model.plan import VENV, WORKDIR
from envd.services.content import ContentHasher
from envd.services.host import HostProbe
from envd.services.images import Images
from envd.services.warm import WarmContainers

ENV_LABEL = FINGERPRINT_LABEL
_FINGERPRINT_MAX_BYTES = 64 << 20  # a fingerprint file named on the command line
# How long the engine's version is trusted for host hashes: every run records one, and asking
# the engine (its /version and /info) costs more than the whole warm `enter` otherwise.
ENGINE_VERSION_TTL_S = 60.0


def _host_dict(section: HostSection) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(section)


# What Podman puts in every container's environment, which its commit bakes into the image's
# ENV (Docker commits neither): left out when the image carries Podman's `container=podman`.
PODMAN_ENV = ("container=podman", "TERM=xterm")


def spec_env_names(image_env: tuple[str, ...]) -> list[str]:
    """The variables a spec set, from an image's ENV (without what every envd image has, nor
    what Podman's commit added)."""
    skip = {"PATH", "VIRTUAL_ENV", "LANG", "HOME"}
    podman = PODMAN_ENV[0] in image_env
    return sorted(
        e.split("=", 1)[0]
        for e in image_env
        if e.split("=", 1)[0] not in skip and not (podman and e in PODMAN_ENV)
    )


class Fingerprints:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        host: HostProbe,
        images: Images,
        warm: WarmContainers,
        content: ContentHasher,
    ) -> None:
        self._content = content
        self._engine = engine
        self._store = store
        self._host = host
        self._images = images
        self._warm = warm
        self._pending: dict[str, EnvironmentSection] = {}  # image -> section, between steps
        self._engine_version: tuple[float, str] | None = None  # (read at, version)

    # ------------------------------------------------------------ the host

    def host_section(self) -> HostSection:
        host = self._host.host
        return HostSection(
            cpu_model=host.cpu_model,
            arch=host.arch,
            kernel=host.kernel,
            engine_version=self.engine_version(),
            gpus=tuple(HostGpu(g.name, g.compute_capability, g.memory_bytes) for g in host.gpus),
            driver_version=host.driver_version,
            cuda_driver_version=host.cuda_driver_version,
        )

    def engine_version(self) -> str:
        """The engine's version, read again after ENGINE_VERSION_TTL_S (not kept while the
        engine does not answer)."""
        now = time.monotonic()
        cached = self._engine_version
        if cached is not None and now - cached[0] <= ENGINE_VERSION_TTL_S:
            return cached[1]
        info = self._engine.info()
        if info.reachable:
            self._engine_version = (now, info.version)
        return info.version

    def host_hash(self) -> str:
        section = self.host_section()
        digest = section_hash(section)
        key = f"host:{digest}"
        if self._store.get(key) is None:  # kept so a run's host can be shown later
            self._store.put(key, json.dumps({"host": _host_dict(section)}))
        return digest

    def hashes(self, image_id: str) -> tuple[str, str]:
        """(environment hash, host hash) recorded for an image; "" for an unknown environment."""
        return self._store.environment_hash(image_id), self.host_hash()

    # ------------------------------------------------------------ computing

    def environment(self, image: str, base_digest: str, env: dict[str, str]) -> EnvironmentSection:
        """The environment section of `image`, from its layer bytes (nothing in it runs)."""
        return environment_from_manifest(
            self._content.image_manifest(image), base_digest, env, VENV
        )

    def manifest(self, image: str) -> Manifest:
        return self._content.image_manifest(image)

    def image_environment(self, info: ImageInfo) -> EnvironmentSection:
        """An image's environment, with the variables its spec set taken from its own ENV."""
        names = set(spec_env_names(info.env))
        env = dict(e.split("=", 1) for e in info.env if "=" in e and e.split("=", 1)[0] in names)
        return self.environment(info.id, info.labels.get(BASE_DIGEST_LABEL, ""), env)

    # ------------------------------------------------------------ build hooks

    def labels_before_metadata(self, image: str, lock: LockFile) -> dict[str, str]:
        """Called by the builder before the last step, so the hash becomes an image label."""
        section = self.environment(image, lock.base.digest, dict(lock.inputs.env))
        self._pending[lock.inputs_hash] = section
        return {ENV_LABEL: section_hash(section)}

    def record(self, image_id: str, lock: LockFile) -> Fingerprint:
        section = self._pending.pop(lock.inputs_hash, None)
        if section is None:
            # An image whose every step was cached: its environment was read from its layers
            # and recorded under this image ID (its config and layers) when it was made.
            document = self._store.fingerprint_document(image_id)
            try:
                if document is not None:
                    section = loads(document, f"the fingerprint of {image_id}").environment
            except VerificationError:  # (one of an older schema: read the layers again)
                section = None
        if section is None:
            section = self.environment(image_id, lock.base.digest, dict(lock.inputs.env))
        return self.record_section(image_id, section)

    def record_section(self, image_id: str, section: EnvironmentSection) -> Fingerprint:
        fp = make_fingerprint(section, self.host_section())
        self._store.record_fingerprint(image_id, dumps(fp), fp.environment_hash)
        return fp

    # ------------------------------------------------------------ lookups

    def for_image(
        self, image: str, base_digest: str = "", env: dict[str, str] | None = None
    ) -> Fingerprint:
        info = self._engine.inspect_image(image)
        if info is None:
            raise NotFound(f"image {image} is not on the engine")
        document = self._store.fingerprint_document(info.id)
        host = self.host_section()
        if document is not None:
            stored = loads(document, f"the fingerprint of {image}")
            return make_fingerprint(stored.environment, host)
        return make_fingerprint(self.image_environment(info), host)

    def for_project(self, row: ProjectRow) -> Fingerprint:
        image = self._images.current_image(row) or row.image
        if not image:
            raise NotFound(
                f"project {row.name} has no image yet", hint=f"run `envctl build {row.name}`"
            )
        return self.for_image(image)

    def image_of(self, row: ProjectRow) -> str:
        return self._images.current_image(row) or row.image

    def diff(self, a: Fingerprint, b: Fingerprint, a_image: str, b_image: str) -> FingerprintDiff:
        """What differs, by section; with both images on the engine, file by file too."""
        diff = diff_fingerprints(a, b)
        if diff.environment_identical or not (a_image and b_image):
            return diff
        files = file_changes(self.manifest(a_image), self.manifest(b_image))
        return FingerprintDiff((*diff.changes, *files), False, diff.host_identical)

    def for_run(self, run_id: str) -> Fingerprint:
        run = self._store.run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id}", hint="`envctl runs` lists them")
        fp = self.for_image(run.image)
        stored = self._store.get(f"host:{run.host_hash}")
        if stored is None:
            return fp
        host = json.loads(stored)["host"]
        section = HostSection(**{**host, "gpus": tuple(HostGpu(**g) for g in host["gpus"])})
        return make_fingerprint(fp.environment, section)

    def for_file(self, path: str) -> Fingerprint:
        raw = read_user_file(path, _FINGERPRINT_MAX_BYTES, "fingerprint")
        return loads(raw.decode("utf-8", "replace"), path)

    # ------------------------------------------------------------ verify

    def verify(self, row: ProjectRow) -> tuple[FingerprintDiff, str]:
        """The recorded fingerprint against the image's bytes now, and the warm container's
        changes to its image's files (read from the engine; nothing runs in either)."""
        image = self._images.current_image(row) or row.image
        if not image:
            raise NotFound(
                f"project {row.name} has no image yet", hint=f"run `envctl build {row.name}`"
            )
        recorded = self.for_image(image)
        info = self._engine.inspect_image(image)
        if info is None:
            raise NotFound(
                f"the image {image} of {row.name} is gone from the engine",
                hint=f"build it again: `envctl build {row.name}`",
            )
        host = self.host_section()
        now = make_fingerprint(self.image_environment(info), host)
        diff = diff_fingerprints(recorded, now)
        changes = list(diff.changes)
        checked = f"image {image}"
        identical = diff.environment_identical
        warm = self._warm.get(row.name)
        if warm is not None and warm.image == image:
            dirs = {
                path
                for path, entry in self._content.image_manifest(info.id).entries.items()
                if entry.kind == "dir"
            }
            live = [
                Change("environment", "files", kind, name=path)
                for path, kind in self._engine.container_changes(warm.container_id)
                if not _envd_owned(path)
                and not _bytecode(path, kind)
                and not (kind == "changed" and path in dirs)  # its changed children are listed
            ]
            changes += live
            identical = identical and not live
            checked += f" and warm container {warm.name}"
        return FingerprintDiff(tuple(changes), identical, diff.host_identical), checked


# What envd itself changes in a warm container: the caller's user entry and home, scratch space.
_ENVD_OWNED = (
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/profile.d/envd.sh",  # the caller's environment for login shells (warm.ensure_user)
    "/home",
    "/root",
    "/tmp",
    "/run",
    "/var/tmp",
    WORKDIR,
)


def _bytecode(path: str, kind: str) -> bool:
    """Python's own byte-code cache, written on import (`__pycache__/*.pyc`, added only): not a
    change to the environment. An edited or removed .py next to it is still reported."""
    if kind != "added":
        return False
    parent, _, base = path.rpartition("/")
    return base == "__pycache__" or (parent.endswith("/__pycache__") and base.endswith(".pyc"))


def _envd_owned(path: str) -> bool:
    return is_excluded(path) or any(path == p or path.startswith(p + "/") for p in _ENVD_OWNED)


def file_changes(old: Manifest, new: Manifest) -> list[Change]:
    """Files that differ between two manifests, with the package that owns each when known."""
    owners = file_owners(new) | file_owners(old)
    return [
        Change("environment", "files", c.kind, name=c.path, old=owners.get(c.path, ""))
        for c in diff_manifests(old, new)
    ]
