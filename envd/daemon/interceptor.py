"""Maps the error root to gRPC status codes, so errors keep their meaning end to end.

The CLI reads the trailing metadata `envd-kind`, `envd-exit` and `envd-hint` back into the same
exit codes; nothing downstream matches on message text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from envd.errors import EXIT_BUG, EnvdError

log = logging.getLogger(__name__)


def _abort(context: grpc.ServicerContext, exc: BaseException, log_path: str) -> None:
    if isinstance(exc, EnvdError):
        code = getattr(grpc.StatusCode, exc.grpc_code)
        context.set_trailing_metadata(
            (
                ("envd-kind", exc.kind),
                ("envd-exit", str(exc.exit_code)),
                ("envd-hint", (exc.hint or "").replace("\n", " ")),
            )
        )
        context.abort(code, exc.message)
    log.exception("internal error")
    context.set_trailing_metadata((("envd-kind", "bug"), ("envd-exit", str(EXIT_BUG))))
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in envd: {type(exc).__name__}: {exc} (details in {log_path})",
    )


class ErrorInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, log_path: str) -> None:
        self._log_path = log_path

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        log_path = self._log_path
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
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
                    yield from inner_us(request, context)
                except Exception as exc:
                    _abort(context, exc, log_path)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
