"""One-shot containers: argv run in a fresh container, waited for, optionally committed, removed."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envd.errors import EnvdError
from envd.gateways.engine.errors import engine_error
from envd.gateways.engine.records import CommitSpec, Mount, OutputSink, RunResult
from envd.gateways.engine.volumes import VolumesMixin


@dataclass
class _Tail:
    limit: int = 200
    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > self.limit:
            del self.lines[: len(self.lines) - self.limit]

    def text(self) -> str:
        return "\n".join(self.lines)


class OneShotMixin(VolumesMixin):
    def run(
        self,
        image: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
        network: bool = True,
        user: str = "",
        workdir: str = "",
        labels: Mapping[str, str] | None = None,
        on_output: OutputSink | None = None,
        commit: CommitSpec | None = None,
        timeout: float | None = None,
        device_requests: Sequence[Mapping[str, Any]] = (),
    ) -> RunResult:
        """Run argv in a fresh container and wait; optionally commit it as an image.

        The container is always removed, also when the caller is interrupted. On a remote
        engine a read-only bind mount of a host folder becomes a copy of it in a fresh volume
        (see `_materialise`), removed with the container.
        """
        container_id = ""
        tail = _Tail()
        volumes: list[str] = []
        try:
            mounts, volumes = self._materialise(image, mounts, labels or {})
            container_id = self._create(
                image,
                list(argv),
                env=env,
                mounts=mounts,
                network=network,
                user=user,
                workdir=workdir,
                labels=self.labels(**dict(labels or {})),
                device_requests=device_requests,
            )
            api = self.client.api
            api.start(container_id)
            for line in _lines(api.logs(container_id, stream=True, follow=True)):
                tail.add(line)
                if on_output is not None:
                    on_output(line)
            status = api.wait(container_id, timeout=timeout)
            code = int(status.get("StatusCode", 1))
            result = RunResult(exit_code=code, output=tail.text(), container_id=container_id)
            if code == 0 and commit is not None:
                if commit.before is not None:
                    commit.before(container_id)
                committed = api.commit(
                    container_id,
                    repository=commit.repository,
                    tag=commit.tag,
                    changes=commit.instructions(self.labels(**dict(commit.labels))),
                )
                result.image_id = str(committed["Id"])
            return result
        except EnvdError:
            raise
        except Exception as exc:
            raise engine_error(exc) from exc
        finally:
            if container_id:
                self.remove_container(container_id)
            for volume in volumes:
                self.remove_volume(volume)

    def _materialise(
        self, image: str, mounts: Sequence[Mount], labels: Mapping[str, str]
    ) -> tuple[list[Mount], list[str]]:
        """The mounts as a remote engine can make them, and the volumes made for them.

        A local engine binds our folders as they are. A remote one cannot see them: each
        folder's files are copied into a fresh labelled volume (through a container of `image`
        that is created, never started, and removed), mounted read-only where the folder was.
        Volumes are never committed, so nothing copied (the CA bundle) lands in an image.
        """
        if not self.remote or all(m.volume for m in mounts):
            return list(mounts), []
        out: list[Mount] = []
        made: list[str] = []
        try:
            for m in mounts:
                if m.volume:
                    out.append(m)
                    continue
                if not m.read_only:  # what the container writes would never come back
                    raise EnvdError(
                        f"{m.source} cannot be mounted writable on the remote engine at "
                        f"{self.endpoint.host}: only read-only folders are copied there"
                    )
                made.append(self.copy_to_volume(image, Path(m.source), labels))
                out.append(Mount(made[-1], m.target, read_only=True, volume=True))
        except BaseException:
            for volume in made:
                self.remove_volume(volume)
            raise
        return out, made


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")
