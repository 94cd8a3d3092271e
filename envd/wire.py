"""Fingerprints between the domain model and protobuf messages (used by daemon and CLI)."""

from __future__ import annotations

from envd.model.fingerprint import (
    Change,
    EnvironmentSection,
    Fingerprint,
    HostGpu,
    HostSection,
    Package,
)
from envd.v1 import envd_pb2 as pb


def _named(items: tuple[Package, ...]) -> list[pb.NamedVersion]:
    return [pb.NamedVersion(name=p.name, version=p.version, detail=p.detail) for p in items]


def _packages(items: object) -> tuple[Package, ...]:
    return tuple(Package(i.name, i.version, i.detail) for i in items)  # type: ignore[attr-defined]


def to_msg(fp: Fingerprint) -> pb.Fingerprint:
    e, h = fp.environment, fp.host
    return pb.Fingerprint(
        schema_version=fp.schema_version,
        environment=pb.EnvironmentSection(
            base_digest=e.base_digest,
            os_release=e.os_release,
            glibc=e.glibc,
            arch=e.arch,
            debian_packages=_named(e.debian_packages),
            python_version=e.python_version,
            python_implementation=e.python_implementation,
            python_packages=_named(e.python_packages),
            cuda_libraries=_named(e.cuda_libraries),
            env=e.env,
            content_hash=e.content_hash,
            files=e.files,
        ),
        host=pb.HostSection(
            cpu_model=h.cpu_model,
            arch=h.arch,
            kernel=h.kernel,
            engine_version=h.engine_version,
            gpus=[
                pb.HostGpu(
                    model=g.model,
                    compute_capability=g.compute_capability,
                    memory_bytes=g.memory_bytes,
                )
                for g in h.gpus
            ],
            driver_version=h.driver_version,
            cuda_driver_version=h.cuda_driver_version,
        ),
        environment_hash=fp.environment_hash,
        host_hash=fp.host_hash,
        root_hash=fp.root_hash,
    )


def from_msg(msg: pb.Fingerprint) -> Fingerprint:
    e, h = msg.environment, msg.host
    environment = EnvironmentSection(
        base_digest=e.base_digest,
        os_release=dict(e.os_release),
        glibc=e.glibc,
        arch=e.arch,
        debian_packages=_packages(e.debian_packages),
        python_version=e.python_version,
        python_implementation=e.python_implementation,
        python_packages=_packages(e.python_packages),
        cuda_libraries=_packages(e.cuda_libraries),
        env=dict(e.env),
        content_hash=e.content_hash,
        files=e.files,
    )
    host = HostSection(
        cpu_model=h.cpu_model,
        arch=h.arch,
        kernel=h.kernel,
        engine_version=h.engine_version,
        gpus=tuple(HostGpu(g.model, g.compute_capability, g.memory_bytes) for g in h.gpus),
        driver_version=h.driver_version,
        cuda_driver_version=h.cuda_driver_version,
    )
    return Fingerprint(
        environment, host, msg.environment_hash, msg.host_hash, msg.root_hash, msg.schema_version
    )


def change_msg(c: Change) -> pb.Change:
    return pb.Change(
        section=c.section, field=c.field, kind=c.kind, name=c.name, old=c.old, new=c.new
    )


def change_from_msg(m: pb.Change) -> Change:
    return Change(m.section, m.field, m.kind, m.name, m.old, m.new)
