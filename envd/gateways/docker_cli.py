"""A command in a remote engine's warm container, run by the daemon as `docker exec` on the
caller's own stdin, stdout and stderr (the enter hot path, envd/daemon/enter_socket.py).

A remote engine's containers have no agent (the daemon cannot reach a Unix socket there), so
the daemon starts the docker client itself, with the fds the CLI passed as its stdio and the
daemon's own DOCKER_HOST / DOCKER_CONTEXT: its terminal, pipes and exit status are the user's,
as with the `docker exec` the CLI would otherwise run after a gRPC Enter.

`docker exec` does not pass signals on, so the command is started under a wrapper that keeps
its pid in the container (wrap_for_signals) and a signal is sent there with `kill` in an API
exec; with a TTY the docker client resizes the exec on SIGWINCH by itself (it reads the size of
the terminal it was given). Hanging up: SIGHUP in the container, then SIGKILL after a grace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

from envd.errors import ContainerError
from envd.gateways.engine import Engine

HANG_UP_GRACE_S = 5.0
WINCH_AGAIN_S = 0.2
NAMES = {signal.SIGHUP: "HUP", signal.SIGINT: "INT", signal.SIGTERM: "TERM"}


def exec_argv(
    container: str,
    argv: Sequence[str],
    user: str,
    workdir: str,
    env: Mapping[str, str],
    tty: bool,
) -> list[str]:
    out = ["docker", "exec", "-i", *(["-t"] if tty else []), "-u", user, "-w", workdir]
    for key, value in sorted(env.items()):
        out += ["-e", f"{key}={value}"]
    return [*out, container, *argv]


class DockerExec:
    """One `docker exec` child of the daemon; select()able (a pidfd) until it has ended."""

    def __init__(
        self,
        engine: Engine,
        container: str,
        argv: list[str],
        fds: tuple[int, int, int],
        pid_file: str,
    ) -> None:
        self._engine = engine
        self._container = container
        self._pid_file = pid_file
        self._interrupts = 0
        self._lock = threading.Lock()
        self.returncode: int | None = None
        self.signal: int | None = None
        self.error: str | None = None
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
                env=dict(os.environ),  # the daemon's engine (DOCKER_HOST, DOCKER_CONTEXT)
                start_new_session=True,  # the daemon's signals are not the command's
                close_fds=True,
            )
        except OSError as exc:
            raise ContainerError(
                f"cannot run `docker exec` for {container[:12]}: {exc}",
                hint="a remote engine is entered with the docker client: install it beside "
                "the daemon (the `docker` command on PATH)",
            ) from exc
        self.pid = self._proc.pid
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except OSError as exc:  # a kernel before 5.3
            self._proc.kill()
            self._proc.wait()
            raise ContainerError(f"cannot watch `docker exec` for {container[:12]}: {exc}") from exc

    def fileno(self) -> int:
        return self._pidfd

    def wait(self, timeout: float | None = None) -> int:
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError from None
        self.returncode = code if code >= 0 else 128 - code
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """The signal to the command in the container (the third Ctrl-C kills it)."""
        name = NAMES.get(signal.Signals(signum), "")
        if not name:
            return
        if signum == signal.SIGINT:
            with self._lock:
                self._interrupts += 1
                if self._interrupts >= 3:  # a command that ignores Ctrl-C still ends
                    name = "KILL"
        self._kill(name)

    def resize(self, rows: int, cols: int) -> None:
        """The docker client reads its terminal's new size on SIGWINCH and resizes the exec.
        It listens for SIGWINCH only after its first resize, just after the start, so one
        more comes a moment later (a size changed in between is not lost)."""
        del rows, cols
        self._winch()
        timer = threading.Timer(WINCH_AGAIN_S, self._winch)
        timer.daemon = True
        timer.start()

    def _winch(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.send_signal(signal.SIGWINCH)
            except OSError:
                pass

    def hang_up(self) -> None:
        self._kill("HUP")
        timer = threading.Timer(HANG_UP_GRACE_S, self._hang_up_hard)
        timer.daemon = True
        timer.start()

    def _hang_up_hard(self) -> None:
        if self._proc.poll() is None:
            self._kill("KILL")
            try:
                self._proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def _kill(self, name: str) -> None:
        # The command may not have written its pid yet: wait for it (5 s at most).
        script = (
            f"i=0; while [ ! -s {self._pid_file} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1));"
            f" done; kill -{name} $(cat {self._pid_file})"
        )
        threading.Thread(target=self._exec_detached, args=(script,), daemon=True).start()

    def _exec_detached(self, script: str) -> None:
        try:
            api = self._engine.client.api
            exec_id = api.exec_create(self._container, ["sh", "-c", script], user="0")["Id"]
            api.exec_start(exec_id, detach=True)
        except Exception:  # the container (or engine) went away: the command with it
            pass

    def close(self) -> None:
        if self._proc.poll() is None:
            self._hang_up_hard()
        try:
            os.close(self._pidfd)
        except OSError:
            pass

    def __enter__(self) -> DockerExec:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
