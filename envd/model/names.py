"""The names envd gives engine objects and the label keys it puts on them, in one place, so
what writes a label and what reads it (possibly another envd version, on a shared engine)
cannot drift apart.

Pure: strings and the functions that compose names from them.
"""

from __future__ import annotations

# ---------------------------------------------------------------- label keys

MANAGED_LABEL = "envd.managed"  # "1" on everything envd creates on the engine
ROLE_LABEL = "envd.role"  # what a container, volume or image is for: the ROLE_* values below
PROJECT_LABEL = "envd.project"  # the project (envd.yaml `name`) it belongs to
OWNER_LABEL = "envd.owner"  # which daemon (home) made it: several may share one engine
STEP_LABEL = "envd.step"  # the build step a step container or cache image is for
SOURCE_LABEL = "envd.source"  # a mount volume: the host folder it holds a copy of
VOLUME_ID_LABEL = "envd.volume-id"  # a synced volume's identity (a new one per volume)
# An environment image's metadata (the plan's `metadata` step writes them).
BASE_DIGEST_LABEL = "envd.base-digest"
LOCK_HASH_LABEL = "envd.lock-hash"
PYTHON_LABEL = "envd.python"
FINGERPRINT_LABEL = "envd.fingerprint.environment"  # the environment section's hash
# The Debian base images envd imports (services/debian_base).
BASE_SUITE_LABEL = "envd.base.suite"
BASE_TARBALL_LABEL = "envd.base.tarball-sha256"
# Warm containers (services/warm).
IMAGE_LABEL = "envd.image"
IMAGE_ID_LABEL = "envd.image-id"
PORTS_LABEL = "envd.ports"
GPUS_LABEL = "envd.gpus"
AGENT_LABEL = "envd.agent"
AGENT_USER_LABEL = "envd.agent-user"

# ---------------------------------------------------------------- roles (ROLE_LABEL's values)

ROLE_STEP = "step"  # a container running a build step
ROLE_IMAGE = "image"  # an image a step committed as the environment
ROLE_LAYER = "layer"  # an image a step committed as a cached layer
ROLE_MOUNT = "mount"  # a volume holding a copy of a host folder (remote engines)
ROLE_PROJECT_FILES = "project-files"  # the volume a project's files are synced to
ROLE_GPU_PROBE = "gpu-probe"  # the container that asks the engine for GPUs
ROLE_WARM = "warm"  # a kept-running container `enter` execs into

# ---------------------------------------------------------------- object names

BASE_REPOSITORY = "envd/base-debian"  # the Debian bases envd imports
CACHE_REPOSITORY = "cache"  # step images, under the home's namespace: NAMESPACE/cache:KEY
UV_CACHE_VOLUME = "uv-cache"  # build caches, volumes under the home's namespace: NAMESPACE-NAME
APT_ARCHIVES_VOLUME = "apt-archives"
MOUNT_VOLUME_PREFIX = "envd-mnt-"  # a mount volume: the prefix and a random token


def label_filter(key: str, value: str) -> str:
    """An engine `label=` filter matching objects whose label `key` is `value`."""
    return f"{key}={value}"


def namespace(owner: str) -> str:
    """The prefix of a home's images and volumes: `envd-<owner12>` (`envd-<owner12>/cache:KEY`)."""
    return f"envd-{owner[:12]}"


def home_volume(namespace: str, name: str) -> str:
    """A volume of the home's: `envd-<owner12>-NAME` (e.g. UV_CACHE_VOLUME)."""
    return f"{namespace}-{name}"


def project_volume(namespace: str, project: str) -> str:
    """The volume a project's files are synced to: `envd-<owner12>-project-<name>`."""
    return home_volume(namespace, f"project-{project}")


def warm_container(project: str, image_id: str) -> str:
    """A warm container's name: the project and its image's short id (one per image)."""
    return f"envd-{project}-{image_id.removeprefix('sha256:')[:12]}"
