"""The Docker engine: the only package that imports the docker SDK.

Everything envd creates on the engine carries the label `envd.managed=1`, plus the extra labels
the daemon was configured with (tests use these to find and remove what they made).

The engine is the one DOCKER_HOST names, else the Docker context (DOCKER_CONTEXT, else the
current one in ~/.docker/config.json), as the docker CLI picks it. An engine not on a local
socket is remote (`engine_is_remote`): it cannot see this machine's files, so a one-shot
container's host folders are copied to it in volumes (`Engine.run`).

One module per seam, composed as docker-py composes its APIClient from mixins:
    endpoint     how the engine is reached (unix, tcp with TLS, ssh; DOCKER_HOST or a context)
    errors       the one translator of docker SDK exceptions into envd errors
    records      the typed records the engine answers with, and the pure rules reading them
    saved        the `docker save` archive reader (bytes and streams; no docker SDK)
    connection   the shared base: endpoint, lazy client, `info`, labels
    images, containers, volumes, oneshot   one facet each
"""

from __future__ import annotations

from envd.gateways.engine.containers import ContainersMixin
from envd.gateways.engine.endpoint import (
    DEFAULT_HOST,
    EngineEndpoint,
    engine_is_remote,
    resolve_endpoint,
)
from envd.gateways.engine.errors import engine_error
from envd.gateways.engine.images import ImagesMixin
from envd.gateways.engine.oneshot import OneShotMixin
from envd.gateways.engine.records import (
    CLASSIC_STORE,
    CONTAINERD_STORE,
    MANAGED_LABEL,
    CommitSpec,
    ContainerInfo,
    EngineInfo,
    ImageInfo,
    Mount,
    OutputSink,
    PushResult,
    RunResult,
    engine_product,
    engine_rootless,
    image_store,
    split_reference,
)
from envd.gateways.engine.saved import (
    ChunkReader,
    SavedImage,
    read_saved_image,
    uncompress_saved_image,
)
from envd.gateways.engine.volumes import VolumesMixin


class Engine(ImagesMixin, OneShotMixin, VolumesMixin, ContainersMixin):
    """A thin, typed face over docker-py. Connects lazily, so importing this costs nothing."""


__all__ = [
    "CLASSIC_STORE",
    "CONTAINERD_STORE",
    "DEFAULT_HOST",
    "MANAGED_LABEL",
    "ChunkReader",
    "CommitSpec",
    "ContainerInfo",
    "Engine",
    "EngineEndpoint",
    "EngineInfo",
    "ImageInfo",
    "Mount",
    "OutputSink",
    "PushResult",
    "RunResult",
    "SavedImage",
    "engine_error",
    "engine_is_remote",
    "engine_product",
    "engine_rootless",
    "image_store",
    "read_saved_image",
    "resolve_endpoint",
    "split_reference",
    "uncompress_saved_image",
]
