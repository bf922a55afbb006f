"""The one place where exceptions become gRPC statuses, and where bearer tokens are checked.

Servicers hold no try/except: an ECCacheError aborts with its own code and message; anything else
is logged with its traceback and answered INTERNAL without details (no traceback reaches a caller).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from eccache.errors import ECCacheError

log = logging.getLogger(__name__)

# Health checks (load balancers, docker) carry no token; they reveal nothing about entries.
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/",)


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, ECCacheError):
        context.abort(exc.grpc_code, str(exc))
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.rsplit('/', 1)[-1]}")


class ServerInterceptor(grpc.ServerInterceptor):
    """Bearer-token auth (constant-time compare), error mapping and latency metrics."""

    def __init__(self, auth_token: str | None, observe: Callable[[str, str, float], None] | None = None):
        self._expected = f"Bearer {auth_token}".encode() if auth_token else None
        self._observe = observe or (lambda method, code, seconds: None)

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        if self._expected is None or details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return True
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(got, self._expected)
        return False

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        if not self._authorized(details):
            return _deny(handler)
        return _wrap(handler, method, self._observe)


def _deny(handler: Any) -> Any:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    return _rebuild(handler, deny, deny)


def _wrap(handler: Any, method: str, observe: Callable[[str, str, float], None]) -> Any:
    inner = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)
    name = method.rsplit("/", 1)[-1]

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        code = "OK"
        try:
            return inner(request, context)
        except Exception as exc:
            code = exc.grpc_code.name if isinstance(exc, ECCacheError) else "INTERNAL"
            _abort(context, exc, method)
        finally:
            observe(name, code, time.perf_counter() - start)

    def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        code = "OK"
        try:
            yield from inner(request, context)
        except Exception as exc:
            code = exc.grpc_code.name if isinstance(exc, ECCacheError) else "INTERNAL"
            _abort(context, exc, method)
        finally:
            observe(name, code, time.perf_counter() - start)

    return _rebuild(handler, unary, streaming)


def _rebuild(handler: Any, unary_response: Callable[..., Any], stream_response: Callable[..., Any]) -> Any:
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response, **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_response, **kwargs)
