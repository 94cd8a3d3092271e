"""Computing, storing and comparing fingerprints of images, containers, runs and the host."""

from __future__ import annotations

import json
from pathlib import Path

from envd.errors import NotFound, VerificationError
from envd.gateways.engine import Engine, Mount
from envd.gateways.store import ProjectRow, Store
from envd.model.fingerprint import (
    EnvironmentSection,
    Fingerprint,
    FingerprintDiff,
    HostGpu,
    HostSection,
    diff_fingerprints,
    dumps,
    environment_from_probe,
    loads,
    make_fingerprint,
    section_hash,
)
from envd.model.lockfile import LockFile
from envd.model.plan import VENV
from envd.services.host import HostProbe
from envd.services.images import Images
from envd.services.warm import WarmContainers

PROBE = Path(__file__).resolve().parents[1] / "probe" / "probe_env.py"
PROBE_IN_CONTAINER = "/run/envd-probe/probe_env.py"
ENV_LABEL = "envd.model.fingerprint.environment"
PYTHON_CANDIDATES = (
    f'if [ -x {VENV}/bin/python ]; then exec {VENV}/bin/python "$@"; fi; exec python3 "$@"'
)


def _host_dict(section: HostSection) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(section)


def spec_env_names(image_env: tuple[str, ...]) -> list[str]:
    """The variables a spec set, from an image's ENV (without what every envd image has)."""
    skip = {"PATH", "VIRTUAL_ENV", "LANG", "HOME"}
    return sorted(n for n in (e.split("=", 1)[0] for e in image_env) if n not in skip)


class Fingerprints:
    def __init__(
        self,
        engine: Engine,
        store: Store,
        host: HostProbe,
        images: Images,
        warm: WarmContainers,
    ) -> None:
        self._engine = engine
        self._store = store
        self._host = host
        self._images = images
        self._warm = warm
        self._pending: dict[str, EnvironmentSection] = {}  # image -> section, between steps

    # ------------------------------------------------------------ the host

    def host_section(self) -> HostSection:
        host = self._host.host
        return HostSection(
            cpu_model=host.cpu_model,
            arch=host.arch,
            kernel=host.kernel,
            engine_version=self._engine.info().version,
            gpus=tuple(HostGpu(g.name, g.compute_capability, g.memory_bytes) for g in host.gpus),
            driver_version=host.driver_version,
            cuda_driver_version=host.cuda_driver_version,
        )

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

    def probe_image(
        self,
        image: str,
        base_digest: str,
        names: list[str],
        set_env: dict[str, str] | None = None,
    ) -> EnvironmentSection:
        """Probe a container of `image`; `set_env` stands in for ENV the last step adds."""
        result = self._engine.run(
            image,
            ["sh", "-c", PYTHON_CANDIDATES, "sh", PROBE_IN_CONTAINER, *sorted(names)],
            env=set_env,
            mounts=[Mount(str(PROBE), PROBE_IN_CONTAINER, read_only=True)],
            network=False,
            user="0",
            labels={"envd.role": "probe"},
        )
        return self._section(result.exit_code, result.output, image, base_digest)

    def probe_container(
        self, container: str, base_digest: str, names: list[str]
    ) -> EnvironmentSection:
        self._engine.copy_into(container, "/tmp", {"envd_probe_env.py": PROBE.read_bytes()})
        result = self._engine.exec_capture(
            container,
            ["sh", "-c", PYTHON_CANDIDATES, "sh", "/tmp/envd_probe_env.py", *sorted(names)],
            user="0",
        )
        return self._section(result.exit_code, result.output, container, base_digest)

    def _section(self, code: int, output: str, what: str, base_digest: str) -> EnvironmentSection:
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if code != 0 or not lines:
            raise VerificationError(
                f"could not read the environment of {what} (exit {code}): {output[-300:]}"
            )
        probe = json.loads(lines[-1])
        return environment_from_probe(probe, base_digest, dict(probe.get("env", {})))

    # ------------------------------------------------------------ build hooks

    def labels_before_metadata(self, image: str, lock: LockFile) -> dict[str, str]:
        """Called by the builder before the last step, so the hash becomes an image label."""
        env = dict(lock.inputs.env)
        section = self.probe_image(image, lock.base.digest, list(env), set_env=env)
        self._pending[lock.inputs_hash] = section
        return {ENV_LABEL: section_hash(section)}

    def record(self, image_id: str, lock: LockFile) -> Fingerprint:
        section = self._pending.pop(lock.inputs_hash, None)
        if section is None:
            section = self.probe_image(image_id, lock.base.digest, [k for k, _ in lock.inputs.env])
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
        names = spec_env_names(info.env)
        base = base_digest or info.labels.get("envd.base-digest", "")
        section = self.probe_image(info.id, base, names)
        return make_fingerprint(section, host)

    def for_project(self, row: ProjectRow) -> Fingerprint:
        image = self._images.current_image(row) or row.image
        if not image:
            raise NotFound(
                f"project {row.name} has no image yet", hint=f"run `envctl build {row.name}`"
            )
        return self.for_image(image)

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
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise NotFound(f"cannot read {path}: {exc.strerror}") from None
        return loads(text, path)

    # ------------------------------------------------------------ verify

    def verify(self, row: ProjectRow) -> tuple[FingerprintDiff, str]:
        """Recorded fingerprint vs the image now, and vs the warm container if one runs."""
        image = self._images.current_image(row) or row.image
        if not image:
            raise NotFound(
                f"project {row.name} has no image yet", hint=f"run `envctl build {row.name}`"
            )
        recorded = self.for_image(image)
        base = recorded.environment.base_digest
        names = list(recorded.environment.env)
        host = self.host_section()
        now = make_fingerprint(self.probe_image(image, base, names), host)
        diff = diff_fingerprints(recorded, now)
        checked = f"image {image}"
        warm = self._warm.get(row.name)
        if warm is not None and warm.image == image:
            live = make_fingerprint(self.probe_container(warm.container_id, base, names), host)
            live_diff = diff_fingerprints(recorded, live)
            diff = FingerprintDiff(
                diff.changes + live_diff.changes,
                diff.environment_identical and live_diff.environment_identical,
                diff.host_identical and live_diff.host_identical,
            )
            checked += f" and warm container {warm.name}"
        return diff, checked
