"""Maps the error root to gRPC status codes, so errors keep their meaning end to end.

The CLI reads the trailing metadata back into the same error class and exit code; nothing
downstream matches on message text. `envd-kind` and `envd-exit` are ASCII. Plain metadata
values must be printable ASCII (grpc fails the whole call with "Invalid metadata" otherwise),
and a message or hint often holds a path, so those travel as UTF-8 bytes in binary keys,
`envd-message-bin` and `envd-hint-bin`. The status details carry the message too, made ASCII
(backslash escapes), for clients that read only the status.

A full disk is no bug: an OSError ENOSPC or EDQUOT that reaches here (a build copying into
$ENVD_HOME/tmp, say) is the README's exit 11, StateError, naming the folder that is full.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from envd.daemon.engine_guard import EXEMPT, EngineGuard, decode
from envd.errors import EXIT_BUG, EnvdError, disk_full

log = logging.getLogger(__name__)


def ascii_safe(text: str) -> str:
    """Text that fits in a status detail or a plain metadata value: printable ASCII."""
    escaped = text.encode("ascii", errors="backslashreplace").decode("ascii")
    return "".join(c if c.isprintable() else " " for c in escaped)


def _utf8(text: str) -> bytes:
    """A binary metadata value. A path with undecodable bytes (surrogates) keeps its bytes."""
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", errors="backslashreplace")


def _abort(context: grpc.ServicerContext, exc: BaseException, log_path: str) -> None:
    if not isinstance(exc, EnvdError):
        full = disk_full(exc)
        if full is not None:
            log.warning("%s: %s: %s", full.message, type(exc).__name__, exc)
            exc = full
    if isinstance(exc, EnvdError):
        code = getattr(grpc.StatusCode, exc.grpc_code)
        metadata: tuple[tuple[str, str | bytes], ...] = (
            ("envd-kind", ascii_safe(exc.kind)),
            ("envd-exit", str(exc.exit_code)),
            ("envd-message-bin", _utf8(exc.message)),
        )
        if exc.hint:
            metadata += (("envd-hint-bin", _utf8(exc.hint)),)
        context.set_trailing_metadata(metadata)
        context.abort(code, ascii_safe(exc.message))
    log.exception("internal error")
    message = f"internal error in envd: {type(exc).__name__}: {exc} (details in {log_path})"
    context.set_trailing_metadata(
        (
            ("envd-kind", "bug"),
            ("envd-exit", str(EXIT_BUG)),
            ("envd-message-bin", _utf8(message)),
        )
    )
    context.abort(grpc.StatusCode.INTERNAL, ascii_safe(message))


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Errors to status and metadata; and a call from an environment that names another engine
    than the daemon's is refused before it runs (envd/daemon/engine_guard.py)."""

    def __init__(self, log_path: str, guard: EngineGuard | None = None) -> None:
        self._log_path = log_path
        self._guard = guard

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        log_path = self._log_path
        guard = self._guard if handler_call_details.method not in EXEMPT else None
        theirs = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "envd-engine-bin":
                theirs = decode(value)

        def admit() -> None:
            if guard is not None:
                guard.check(theirs)

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    admit()
                    return inner_uu(request, context)
                except Exception as exc:
                    _abort(context, exc, log_path)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            def unary_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    admit()
                    yield from inner_us(request, context)
                except Exception as exc:
                    _abort(context, exc, log_path)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
