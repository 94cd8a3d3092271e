"""The enter hot path's socket: the CLI's own fds to the warm container's agent (no gRPC).

    $ENVD_HOME/run/enter.sock   mode 0600, in the daemon's 0700 folder; peers of another uid
                                are refused (SO_PEERCRED), as on the gRPC socket.

One Unix stream connection per `envctl enter P -- CMD`. Frames as the agent's, with its codec
(a 4-byte big-endian length, then a UTF-8 JSON object with an "op": envd/agent/agent.py).

CLI -> daemon
  {"op": "enter", "project": REF, "argv": [...], "cwd": "...", "gpus": "", "tty": bool,
   "winsize": [rows, cols] or null, "term": "xterm", "user_name": "ada"}
      The first frame, with SCM_RIGHTS: exactly the CLI's stdin, stdout and stderr. The daemon
      decides as the gRPC Enter does (Entering.prepare: build first if needed, with progress
      lines on the passed stderr), records the run, and hands the fds to the container's agent;
      on a remote engine (no agents there) it runs `docker exec` on them itself and brings the
      command's files back before the exit frame (envd/gateways/docker_cli.py).
  {"op": "signal", "signal": N}   SIGINT, SIGTERM or SIGHUP for the command
  {"op": "winsize", "rows": R, "cols": C}
  Closing the connection hangs the command up (SIGHUP, then SIGKILL); its status is recorded.

daemon -> CLI
  {"op": "refused", "reason": "..."}   no agent here: the CLI enters through gRPC + docker exec
  {"op": "error", "message": "...", "hint": "..." or null, "exit_code": N}   nothing ran
  {"op": "started", "run_id": "...", "pid": P}
      With a TTY the CLI sets its terminal raw now (a Ctrl-C is then a byte for the command's
      pty, never a signal to envctl), and at the end restores the state it read before it
      sent the request (a remote engine's `docker exec -t` sets raw and back on its own).
  {"op": "exit", "status": S, "signal": N or null, "error": null or "..."}
      The last frame; the run is recorded with S (128+N for signal N) before it is sent.
      When the warm container dies under the command (its agent goes away without a status),
      an "error" frame with exit code 10 comes instead, and the run is recorded with 10.

CLI -> daemon (no fds; one reply, then the end)
  {"op": "list", "what": "containers", "engine": [...]}
      `envctl ps` without gRPC: answered {"op": "containers", ...} from the daemon's memory;
      the frames are defined in envd/model/listing.py.
  {"op": "build-check", "project": REF, "engine": [...]}
      `envctl build P` without gRPC when the image is up to date: answered "up-to-date" or
      "build-needed"; the frames are defined in envd/model/buildcheck.py.
  {"op": "share-check", "project": REF, "to": REGISTRY/REPO[:TAG], "engine": [...]}
      `envctl share image P --to REF` without gRPC when the registry holds the image already:
      answered "already-shared" (the share done and recorded, no layer moved) or
      "share-needed"; the frames are defined in envd/model/sharecheck.py.

The caller's terminals never reach the container: the agent gets pipes for them, relayed on
this side (envd.gateways.agent_client.TerminalRelay).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envd.agent.agent import Frame, encode, recv_with_fds, take_frames
from envd.daemon.engine_guard import EngineGuard
from envd.daemon.peerguard import peer_credentials
from envd.daemon.sockets import bind_private, shut
from envd.errors import (
    EXIT_BUG,
    EXIT_CONTAINER,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ContainerError,
    EnvdError,
)
from envd.gateways.agent_client import AgentCommand, run_in_agent
from envd.gateways.docker_cli import DockerExec
from envd.model.buildcheck import BUILD_CHECK, build_needed_reply, up_to_date_reply
from envd.model.listing import CONTAINERS, LIST, containers_reply
from envd.model.sharecheck import SHARE_CHECK, already_shared_reply, share_needed_reply
from envd.progress import Progress
from envd.services.entering import EnterCall, Entering, NoAgent
from envd.services.sharing import Shared
from envd.services.warmrecord import Warm

if TYPE_CHECKING:
    from envd.model.listing import WarmRow

log = logging.getLogger(__name__)

FORWARDED = {1, 2, 15}  # SIGHUP, SIGINT, SIGTERM
REQUEST_TIMEOUT_S = 30.0
BUG = "internal error (a bug)"

Lister = Callable[[], list[Warm]]  # the warm containers, each status current
# `share image REF --to TO` when nothing moves: the share and its progress line, else None
Resharer = Callable[[str, str], tuple[Shared, str] | None]


def warm_row(w: Warm) -> WarmRow:
    """What `envctl ps` shows of a warm container (gRPC's WarmContainer has these fields)."""
    return {
        "project": w.project,
        "container_id": w.container_id,
        "image": w.image,
        "started_at": w.started_at,
        "last_used_at": w.last_used_at,
        "status": "retiring" if w.retiring else w.status,
    }


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


class EnterSocket:
    def __init__(
        self,
        path: Path,
        entering: Entering,
        uid: int | None = None,
        guard: EngineGuard | None = None,
        containers: Lister | None = None,
        reshare: Resharer | None = None,
    ) -> None:
        self.path = path
        self.entering = entering
        self.guard = guard
        self.containers = containers
        self.reshare = reshare
        self.uid = os.getuid() if uid is None else uid
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    def listen(self) -> None:
        """Bind with mode 0600 (never briefly wider), then accept in a thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()  # the daemon holds the instance lock: a leftover
        self._listener = bind_private(self.path)
        threading.Thread(target=self._accept_loop, name="enter-socket", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        shut(self._listener)
        self._listener = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            pid, uid, gid = peer_credentials(conn)
            if uid != self.uid:
                log.warning("enter: refused a connection from uid %d (pid %d)", uid, pid)
                conn.close()
                continue
            threading.Thread(
                target=self._serve, args=(conn, uid, gid), name=f"enter-{pid}", daemon=True
            ).start()

    # ------------------------------------------------------------ one enter

    def _serve(self, conn: socket.socket, uid: int, gid: int) -> None:
        fds: list[int] = []
        try:
            with conn:
                Session(
                    self.entering, conn, uid, gid, self.guard, self.containers, self.reshare
                ).run(fds)
        except Exception:
            log.exception("enter: the session failed")
        finally:
            _close(fds)


class Session:
    """One CLI connection: decide, record, run in the agent, relay, record the status."""

    def __init__(
        self,
        entering: Entering,
        conn: socket.socket,
        uid: int,
        gid: int,
        guard: EngineGuard | None = None,
        containers: Lister | None = None,
        reshare: Resharer | None = None,
    ) -> None:
        self.entering = entering
        self.guard = guard
        self.containers = containers
        self.reshare = reshare
        self.conn = conn
        self.uid = uid
        self.gid = gid
        self.buf = bytearray()
        self.cli_gone = False
        self.lost: ContainerError | None = None  # the agent went away before the status came

    def send(self, message: Frame) -> None:
        try:
            self.conn.sendall(encode(message))
        except OSError:
            self.cli_gone = True

    def fail(
        self, error: EnvdError | str, exit_code: int = EXIT_BUG, hint: str | None = None
    ) -> None:
        """The error frame: nothing ran, or how the command ended is unknown (exit_code)."""
        if isinstance(error, EnvdError):
            hint, exit_code = error.hint, error.exit_code
        message = error.message if isinstance(error, EnvdError) else error
        self.send({"op": "error", "message": message, "hint": hint, "exit_code": exit_code})

    def first_frame(self, fds: list[int]) -> Frame:
        while True:
            data = recv_with_fds(self.conn, fds)
            if not data:
                raise ValueError("the connection closed before the request")
            self.buf += data
            frames = take_frames(self.buf)
            if frames:
                if len(frames) > 1:  # keep what came after (signals) for the relay
                    self.buf[:0] = b"".join(encode(f) for f in frames[1:])
                return frames[0]

    def run(self, fds: list[int]) -> None:
        began = time.perf_counter_ns()
        try:
            self.conn.settimeout(REQUEST_TIMEOUT_S)  # a client that never asks holds nothing
            request = self.first_frame(fds)
            self.conn.settimeout(None)
            engine = request.get("engine")
            if engine is not None and not (
                isinstance(engine, list) and all(isinstance(v, str) for v in engine)
            ):
                raise ValueError("engine must be a list of strings")
            if request.get("op") == BUILD_CHECK:
                _close(fds)  # a build-check takes none
                self.answer_build_check(request, engine)
                return
            if request.get("op") == SHARE_CHECK:
                _close(fds)  # a share-check takes none
                self.answer_share_check(request, engine)
                return
            if request.get("op") == LIST:
                _close(fds)  # a list takes none
                self.answer_list(request, engine)
                return
            call, winsize = self.parse(request, fds)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            self.fail(f"bad enter request: {exc}", EXIT_USAGE)
            return
        if not self.engine_allowed(engine):
            return
        stderr = fds[2]

        def progress(p: Progress) -> None:
            if p.log:
                return
            try:
                os.write(stderr, f"[{p.step}] {p.message}\n".encode())
            except OSError:
                pass

        received = time.perf_counter_ns()
        try:
            plan = self.entering.prepare(call, progress)
        except NoAgent as exc:
            self.send({"op": "refused", "reason": exc.message})
            return
        except EnvdError as exc:
            self.fail(exc)
            return
        except Exception:
            log.exception("enter: prepare failed")
            self.fail(BUG)
            return
        prepared = time.perf_counter_ns()
        if self.gone():  # e.g. Ctrl-C during the build: nothing starts
            self.record(plan.run_id, EXIT_INTERRUPTED)
            return
        notes_fd = -1  # a remote engine: sync notes (conflicts) go to the caller's stderr
        command: AgentCommand | DockerExec
        try:
            stdio = (fds[0], fds[1], fds[2])
            if plan.agent_socket:
                command = run_in_agent(
                    plan.agent_socket, plan.argv, plan.workdir, plan.env, stdio,
                    tty=call.tty, winsize=winsize,
                )  # fmt: skip
            else:
                notes_fd = os.dup(fds[2])
                command = self.entering.docker_exec(plan, stdio, call.tty)
        except ContainerError as exc:
            self.sync_back(plan.sync_id, notes_fd)
            self.record(plan.run_id, 126)
            self.fail(exc.message, 126, exc.hint)
            return
        finally:
            _close(fds)  # only the command and the CLI hold them now
        with command:
            started = time.perf_counter_ns()
            if command.returncode is None:
                self.send({"op": "started", "run_id": plan.run_id, "pid": command.pid})
                self.relay(command)
            ended = time.perf_counter_ns()
            status = command.returncode
            assert status is not None
            self.sync_back(plan.sync_id, notes_fd)  # files first: the record hashes outputs
            synced = time.perf_counter_ns()
            self.record(plan.run_id, status)
            if self.lost is not None:
                self.container_died(plan.container_name, self.lost)
            else:
                self.send(
                    {
                        "op": "exit",
                        "status": status,
                        "signal": command.signal,
                        "error": command.error,
                    }
                )
        done = time.perf_counter_ns()
        self.entering.check_image(plan.check_image)  # (the CLI has its exit status)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "enter %s: request %.1f ms, prepare %.1f, start %.1f, command %.1f, "
                "sync back %.1f, record %.1f",
                plan.run_id,
                *((b - a) / 1e6 for a, b in pairwise(
                    (began, received, prepared, started, ended, synced, done)
                )),
            )  # fmt: skip

    def engine_allowed(self, engine: list[str] | None) -> bool:
        """Whether the caller's environment names our engine; else the refusal is sent."""
        if self.guard is None:
            return True
        try:
            self.guard.check(engine)
        except EnvdError as exc:
            self.fail(exc)
            return False
        return True

    def answer_list(self, request: Frame, engine: list[str] | None) -> None:
        """A read-only "list" request (envd/model/listing.py): one reply, then the end."""
        if request.get("what") != CONTAINERS or self.containers is None:
            raise ValueError(f"cannot list {request.get('what')!r}")
        if not self.engine_allowed(engine):
            return
        try:
            rows = [warm_row(w) for w in self.containers()]
        except EnvdError as exc:
            self.fail(exc)
            return
        except Exception:
            log.exception("list: the warm containers could not be listed")
            self.fail(BUG)
            return
        self.send(containers_reply(rows))

    def answer_build_check(self, request: Frame, engine: list[str] | None) -> None:
        """A "build-check" request (envd/model/buildcheck.py): "up-to-date" with the image, or
        "build-needed" (the CLI then builds over gRPC, which says what it does or why not)."""
        project = request.get("project")
        if not isinstance(project, str) or not project:
            raise ValueError("project must be a non-empty string")
        if not self.engine_allowed(engine):
            return
        try:
            answer = self.entering.up_to_date(project)
        except Exception:
            log.exception("build-check: failed")
            self.send({"op": "error", "message": "internal error (a bug)", "exit_code": EXIT_BUG})
            return
        if answer is None:
            self.send(build_needed_reply())
            return
        outcome, environment_hash = answer
        self.send(up_to_date_reply(outcome.image, outcome.image_id, environment_hash))

    def answer_share_check(self, request: Frame, engine: list[str] | None) -> None:
        """A "share-check" request (envd/model/sharecheck.py): "already-shared" when the
        registry holds the image (the share done), else "share-needed" (the CLI then shares
        over gRPC, which pushes or says why not)."""
        project, to = request.get("project"), request.get("to")
        if not isinstance(project, str) or not project or not isinstance(to, str) or not to:
            raise ValueError("project and to must be non-empty strings")
        if self.reshare is None:
            raise ValueError(f"cannot answer {SHARE_CHECK!r} here")
        if not self.engine_allowed(engine):
            return
        try:
            answer = self.reshare(project, to)
        except Exception:
            log.exception("share-check: failed")
            self.fail(BUG)
            return
        if answer is None:
            self.send(share_needed_reply())
            return
        shared, said = answer
        self.send(already_shared_reply(shared.reference, shared.digest, shared.skipped, [said]))

    def parse(self, request: Frame, fds: list[int]) -> tuple[EnterCall, tuple[int, int] | None]:
        if request.get("op") != "enter":
            raise ValueError(f"the first frame must be enter, not {request.get('op')!r}")
        if len(fds) != 3:
            raise ValueError(f"enter needs 3 fds (stdin, stdout, stderr), got {len(fds)}")
        argv = request["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise ValueError("argv must be a list of strings")
        strings = {k: request.get(k, "") for k in ("project", "cwd", "gpus", "term", "user_name")}
        if not all(isinstance(v, str) for v in strings.values()):
            raise ValueError("project, cwd, gpus, term and user_name are strings")
        winsize = request.get("winsize")
        size = None
        if winsize is not None:
            if not (isinstance(winsize, list) and len(winsize) == 2):
                raise ValueError("winsize must be [rows, cols]")
            size = (int(winsize[0]), int(winsize[1]))
        call = EnterCall(
            project=strings["project"],
            command=tuple(argv),
            gpus=strings["gpus"],
            tty=request.get("tty") is True,
            cwd=strings["cwd"],
            uid=self.uid,
            gid=self.gid,
            user_name=strings["user_name"],
            fast=True,
            term=strings["term"],
        )
        return call, size

    def gone(self) -> bool:
        """Whether the CLI has closed its end (without reading what it sent)."""
        try:
            readable = select.select([self.conn], [], [], 0)[0]
            return bool(readable) and self.conn.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def relay(self, command: AgentCommand | DockerExec) -> None:
        """CLI signals and window sizes to the agent until the command ends."""
        for frame in take_frames(self.buf):
            self.control(command, frame)
        if self.cli_gone:  # it left before the command started: hang it up at once
            command.hang_up()
        while command.returncode is None:
            watched: list[Any] = [command] if self.cli_gone else [command, self.conn]
            readable = select.select(watched, [], [])[0]
            if self.conn in readable:
                try:
                    data = self.conn.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    self.cli_gone = True
                    command.hang_up()  # its exit status still comes, and is recorded
                else:
                    self.buf += data
                    try:
                        frames = take_frames(self.buf)
                    except ValueError:
                        frames = []
                        self.buf.clear()
                    for frame in frames:
                        self.control(command, frame)
            if command in readable:
                try:
                    command.wait(timeout=0)
                except TimeoutError:
                    pass
                except ContainerError as exc:  # the agent went away (its container died)
                    log.warning("enter: %s", exc.message)
                    command.returncode, self.lost = EXIT_CONTAINER, exc

    def container_died(self, container: str, exc: ContainerError) -> None:
        """The refusal for a command whose warm container died under it (its end is unknown)."""
        self.fail(
            f"the warm container {container} died while the command ran (killed, out of memory, "
            f"or its engine stopped): how the command ended is unknown ({exc.message})",
            EXIT_CONTAINER,
            "enter again: a new warm container starts; `envctl ps` shows the warm ones",
        )

    def control(self, command: AgentCommand | DockerExec, frame: Frame) -> None:
        op = frame.get("op")
        if op == "signal" and frame.get("signal") in FORWARDED:
            command.send_signal(int(frame["signal"]))
        elif op == "winsize":
            rows, cols = frame.get("rows"), frame.get("cols")
            if isinstance(rows, int) and isinstance(cols, int):
                command.resize(rows, cols)

    def sync_back(self, sync_id: str, notes_fd: int) -> None:
        """A remote engine: what the command made comes back before its status is sent (so the
        files are here when envctl returns); conflicts are told on the caller's stderr."""
        if notes_fd < 0:
            return
        try:
            if sync_id:
                try:
                    notes = self.entering.sync_back(sync_id)
                except EnvdError as exc:
                    notes = [f"warning: files not synced: {exc.message}"]
                except Exception:
                    log.exception("enter: sync back failed")
                    notes = ["warning: files not synced: internal error (a bug)"]
                text = "".join(f"envctl: {note}\n" for note in notes)
                if text:
                    try:
                        os.write(notes_fd, text.encode(errors="replace"))
                    except OSError:
                        pass
        finally:
            os.close(notes_fd)

    def record(self, run_id: str, status: int) -> None:
        if not run_id:
            return
        try:
            self.entering.finish(run_id, status)
        except Exception:
            log.exception("enter: run %s not recorded", run_id)
