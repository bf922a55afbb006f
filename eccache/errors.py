"""Domain exceptions of eccache, each naming its gRPC status code.

Domain code raises these; the server interceptor turns them into gRPC statuses and the client maps
statuses back through the same table (`error_for_code`), so one table owns the mapping.
"""

from __future__ import annotations

import grpc


class ECCacheError(Exception):
    """Root of every eccache error."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidArgument(ECCacheError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ECCacheError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ECCacheError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class InProgress(ECCacheError):
    """Another writer holds the write lease of this key."""

    grpc_code = grpc.StatusCode.ABORTED


class LeaseExpired(ECCacheError):
    """The lease named by the caller is gone (expired, released or taken over)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class CapacityExhausted(ECCacheError):
    """The pool is full and nothing can be evicted."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(ECCacheError):
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class IntegrityError(ECCacheError):
    """Bytes read do not match the committed checksum."""

    grpc_code = grpc.StatusCode.DATA_LOSS


class TransportError(ECCacheError):
    """Moving bytes failed (peer gone, transfer error)."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class Unavailable(ECCacheError):
    """A dependency (Redis, a server) cannot be reached right now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ECCacheError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(ECCacheError):
    grpc_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ECCacheError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: InProgress,
    grpc.StatusCode.FAILED_PRECONDITION: LeaseExpired,
    grpc.StatusCode.RESOURCE_EXHAUSTED: CapacityExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def error_for_code(code: grpc.StatusCode, message: str) -> ECCacheError:
    """The domain exception for a gRPC status (unknown codes become ECCacheError)."""
    cls = _BY_CODE.get(code, ECCacheError)
    err = cls(message)
    if cls is ECCacheError:
        err.grpc_code = code
    return err


def from_rpc_error(exc: grpc.RpcError) -> ECCacheError:
    """Maps a grpc.RpcError (sync or aio) back to the domain exception."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_for_code(code, details or code.name)
