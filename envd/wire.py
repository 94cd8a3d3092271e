"""The domain model to protobuf messages and back, for every message both the daemon and the
CLI convert: fingerprints and their changes, run records and theirs."""

from __future__ import annotations

from typing import cast

from envd.model.fingerprint import (
    Change,
    EnvironmentSection,
    Fingerprint,
    HostGpu,
    HostSection,
    Package,
)
from envd.model.runrecord import Change as RunChange
from envd.model.runrecord import ChangeKind, CodeState, RunRecord
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


def record_msg(r: RunRecord, *, image: str = "", diff: str = "") -> pb.RunRecord:
    """image: the image's tag (the record keeps its id); diff: the code's `git diff HEAD`."""
    return pb.RunRecord(
        id=r.id,
        project=r.project,
        command=list(r.command),
        started_at=r.started_at,
        ended_at=r.ended_at,
        exit_code=r.exit_code,
        finished=r.ended_at > 0,
        environment_hash=r.environment_hash,
        host_hash=r.host_hash,
        git_commit=r.code.commit,
        git_dirty=r.code.dirty,
        image=image,
        params=dict(r.params),
        data=dict(r.data),
        outputs=dict(r.outputs),
        metrics=dict(r.metrics),
        notes=list(r.notes),
        lock_sha256=r.lock_sha256,
        diff_sha256=r.code.diff_sha256,
        diff=diff,
        image_id=r.image,
        imported=r.imported,
        origin=r.origin,
        details_pending=any("not recorded (yet)" in n for n in r.notes),  # (services/runs.py)
        workdir=r.workdir,
    )


def record_from_msg(msg: pb.RunRecord) -> RunRecord:
    """The daemon's message as the model's record (for the table, diff and trace renderers)."""
    return RunRecord(
        id=msg.id,
        project=msg.project,
        command=tuple(msg.command),
        started_at=msg.started_at,
        ended_at=msg.ended_at,
        exit_code=msg.exit_code,
        image=msg.image_id,
        environment_hash=msg.environment_hash,
        host_hash=msg.host_hash,
        lock_sha256=msg.lock_sha256,
        code=CodeState(msg.git_commit, msg.git_dirty, msg.diff_sha256 if msg.git_dirty else ""),
        params=dict(msg.params),
        data=dict(msg.data),
        outputs=dict(msg.outputs),
        metrics=dict(msg.metrics),
        notes=tuple(msg.notes),
        workdir=msg.workdir,
        origin=(msg.origin or "a provenance statement") if msg.imported else "",
    )


def run_change_msg(c: RunChange) -> pb.RunChange:
    return pb.RunChange(
        kind=c.kind,
        name=c.name,
        before=c.before or "",
        after=c.after or "",
        has_before=c.before is not None,
        has_after=c.after is not None,
    )


def run_change_from_msg(m: pb.RunChange) -> RunChange:
    before = m.before if m.has_before else None
    return RunChange(cast(ChangeKind, m.kind), m.name, before, m.after if m.has_after else None)
