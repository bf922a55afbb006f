"""Proxy exceptions, each carrying the HTTP status it maps to at the edge.

Domain code raises these; the aiohttp error middleware (``proxy.app``) turns them into OpenAI-style error
bodies ``{"error": {"message", "type", "code"}}``. Nothing below the edge builds HTTP responses.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of all proxy errors."""

    http_status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ProxyError):
    http_status = 400
    error_type = "invalid_request_error"


class MediaError(BadRequest):
    """A media item could not be fetched or parsed (bad data: URL, forbidden file, too large...)."""


class PayloadTooLarge(ProxyError):
    http_status = 413
    error_type = "invalid_request_error"


class Unauthenticated(ProxyError):
    http_status = 401
    error_type = "authentication_error"


class Forbidden(ProxyError):
    http_status = 403
    error_type = "permission_error"


class NotFound(ProxyError):
    http_status = 404
    error_type = "not_found_error"


class Conflict(ProxyError):
    http_status = 409
    error_type = "conflict_error"


class NoInstanceAvailable(ProxyError):
    """No healthy instance of a role can take the request."""

    http_status = 503
    error_type = "service_unavailable"


class Overloaded(ProxyError):
    """The proxy already serves ``--max-concurrent`` requests; the client should retry later."""

    http_status = 503
    error_type = "service_unavailable"


class UpstreamError(ProxyError):
    """A backend failed (connection error, 5xx, malformed answer). ``retryable``: safe on another instance."""

    http_status = 502
    error_type = "upstream_error"

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None,
                 body: bytes | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.body = body


class UpstreamTimeout(UpstreamError):
    http_status = 504
    error_type = "timeout_error"


class UpstreamFailedRequest(UpstreamError):
    """A backend accepted a streamed request and failed it before any output (an SSE error event).

    Not the instance's fault (it is up and answering) and not worth another instance: the caller decides
    (e.g. re-sends a metadata-only request with its media).
    """

    def __init__(self, message: str, *, status: int, body: bytes) -> None:
        super().__init__(message, retryable=False, status=status, body=body)


class UpstreamRejected(UpstreamError):
    """A backend answered 4xx: the request itself is wrong; passed through to the client, never retried."""

    def __init__(self, message: str, *, status: int, body: bytes) -> None:
        super().__init__(message, retryable=False, status=status, body=body)
        self.http_status = status
