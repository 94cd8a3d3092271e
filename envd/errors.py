"""The one error root, and the exit codes users see.

Every error a user can cause is an EnvdError subclass. Each class fixes its exit code and
the gRPC status code it travels as, so a meaning survives the trip from daemon to CLI
without matching message text.
"""

from __future__ import annotations

import errno
import os

# Exit codes, documented in README.md ("Exit codes").
EXIT_OK = 0
EXIT_USER = 1
EXIT_USAGE = 2
EXIT_BUG = 3
EXIT_NOT_FOUND = 4
EXIT_STALE = 5
EXIT_BUILD = 6
EXIT_HOST = 7
EXIT_REGISTRY = 8
EXIT_VERIFY = 9
EXIT_CONTAINER = 10
EXIT_DAEMON = 11
EXIT_ENGINE = 12
EXIT_INTERRUPTED = 130


class EnvdError(Exception):
    """A failure the user can understand and act on."""

    exit_code = EXIT_USER
    grpc_code = "FAILED_PRECONDITION"  # a grpc.StatusCode name; grpc itself is not imported here
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SpecError(EnvdError):
    """envd.yaml (or a file it names) is invalid."""

    grpc_code = "INVALID_ARGUMENT"
    kind = "spec"

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        key_path: str = "",
        hint: str | None = None,
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        prefix = f"{where}: " + (f"{key_path}: " if key_path else "")
        super().__init__(prefix + message, hint=hint)
        self.file = file
        self.line = line
        self.key_path = key_path


class UsageError(EnvdError):
    """Arguments that do not make sense together."""

    exit_code = EXIT_USAGE
    grpc_code = "INVALID_ARGUMENT"
    kind = "usage"


class NotFound(EnvdError):
    """An unknown project, image, run or template."""

    exit_code = EXIT_NOT_FOUND
    grpc_code = "NOT_FOUND"
    kind = "not_found"


class Conflict(EnvdError):
    """Something already exists (a project name, an envd.yaml)."""

    grpc_code = "ALREADY_EXISTS"
    kind = "conflict"


class LockError(EnvdError):
    """Resolution failed: a conflict, an unreachable index, a base that cannot be read."""

    kind = "lock"


class Unresolvable(LockError):
    """The requirements have no solution for one target Python (no wheel, or a conflict):
    another Python may still fit them. `pin` names the package with no wheel ("" if unknown)."""

    def __init__(self, message: str, *, hint: str | None = None, pin: str = "") -> None:
        super().__init__(message, hint=hint)
        self.pin = pin


class LockStale(EnvdError):
    """envd.lock no longer matches envd.yaml."""

    exit_code = EXIT_STALE
    kind = "stale"


class BuildFailed(EnvdError):
    """A build step failed; the previous image is untouched."""

    exit_code = EXIT_BUILD
    grpc_code = "ABORTED"
    kind = "build"


class HostRequirementError(EnvdError):
    """The host cannot run what the spec asks for (GPU, CUDA, driver)."""

    exit_code = EXIT_HOST
    kind = "host"


def unsupported_platform(platform: str) -> HostRequirementError | None:
    """Why envd cannot run on `platform` (sys.platform), or None on Linux.

    The daemon shares the engine's kernel and file system: it passes descriptors into
    containers, bind-mounts projects, checks peers with SO_PEERCRED and waits on pidfds.
    Where the engine runs in a VM (Docker Desktop, Colima, OrbStack), none of that reaches
    the host; DESIGN.md ("Engines in a VM") says what each path would fall back to.
    """
    if platform.startswith("linux"):
        return None
    shown = {"darwin": "macOS", "win32": "Windows", "cygwin": "Windows (Cygwin)"}
    return HostRequirementError(
        f"envd does not support {shown.get(platform, platform)} yet: it runs on Linux, beside "
        "the engine, sharing its kernel and file system",
        hint="run envd inside the Linux machine that runs your engine (WSL2 on Windows; the "
        "Colima, OrbStack or Docker Desktop VM on macOS)",
    )


class RegistryError(EnvdError):
    """A registry or archive could not be read or written."""

    exit_code = EXIT_REGISTRY
    grpc_code = "UNAVAILABLE"
    kind = "registry"


class VerificationError(EnvdError):
    """An image or environment does not match its recorded fingerprint."""

    exit_code = EXIT_VERIFY
    grpc_code = "DATA_LOSS"
    kind = "verify"


class ContainerError(EnvdError):
    """A warm container died or could not be started."""

    exit_code = EXIT_CONTAINER
    grpc_code = "ABORTED"
    kind = "container"


class DaemonUnavailable(EnvdError):
    """The envd daemon cannot be reached or started (raised by the CLI only)."""

    exit_code = EXIT_DAEMON
    grpc_code = "UNAVAILABLE"
    kind = "daemon"


class EngineUnavailable(EnvdError):
    """The container engine (Docker or Podman) does not answer."""

    exit_code = EXIT_ENGINE
    grpc_code = "UNAVAILABLE"
    kind = "engine"


class StateError(EnvdError):
    """$ENVD_HOME or the socket's path cannot be used: read-only, full, another user's, not a
    socket. The daemon cannot keep (or start with) its state until the user fixes the path."""

    exit_code = EXIT_DAEMON
    grpc_code = "UNAVAILABLE"
    kind = "state"


ALL_ERRORS: tuple[type[EnvdError], ...] = (
    EnvdError,
    SpecError,
    UsageError,
    NotFound,
    Conflict,
    LockError,
    LockStale,
    BuildFailed,
    HostRequirementError,
    RegistryError,
    VerificationError,
    ContainerError,
    DaemonUnavailable,
    EngineUnavailable,
    StateError,
)
ERRORS_BY_KIND: dict[str, type[EnvdError]] = {cls.kind: cls for cls in ALL_ERRORS}


def disk_full(exc: BaseException) -> StateError | None:
    """A full disk or quota anywhere in the chain of `exc` (not an EnvdError), as StateError."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen and not isinstance(cause, EnvdError):
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on device" if cause.errno == errno.ENOSPC else "disk quota full"
            written = cause.filename2 if cause.filename2 is not None else cause.filename
            if written is None:
                return StateError(
                    f"{what} (while envd wrote a file)",
                    hint="free space on the file system of envd's home (`df -h`), then retry",
                )
            folder = os.path.dirname(os.fsdecode(written)) or "."
            shown = folder
            while not os.path.isdir(shown) and os.path.dirname(shown) != shown:
                shown = os.path.dirname(shown)  # a scratch folder is gone by now: its parent
            return StateError(
                f"{what} under {folder} (writing {os.fsdecode(written)})",
                hint=f"free space on that file system (`df -h {shown}`), then retry",
            )
        cause = cause.__cause__ or cause.__context__
    return None
