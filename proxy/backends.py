"""HTTP to backend instances: one aiohttp ClientSession (connection pool) per backend URL.

``post_json`` reads a whole answer; ``open_stream`` returns once the first body bytes arrived (so a caller
can still retry elsewhere: nothing has reached the client yet) and then yields further chunks with an idle
limit. Failures become ``UpstreamError`` (retryable: connection errors, timeouts, 5xx, 408/429),
``UpstreamRejected`` (other 4xx: the client's fault, passed through, never retried) or
``UpstreamFailedRequest`` (a stream that opened with an error event, see ``proxy.sse``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from proxy.errors import UpstreamError, UpstreamFailedRequest, UpstreamRejected, UpstreamTimeout
from proxy.sse import Opening, classify_opening

_JSON_HEADERS = {"Content-Type": "application/json"}
_MAX_ERROR_BODY = 64 * 1024


def _status_error(url: str, status: int, body: bytes) -> UpstreamError:
    if 400 <= status < 500 and status not in (408, 429):
        return UpstreamRejected(f"{url} rejected the request: HTTP {status}", status=status, body=body)
    return UpstreamError(f"{url} failed: HTTP {status}", status=status, body=body)


@dataclass(eq=False)
class UpstreamStream:
    """An open response whose first bytes arrived. Close it (idempotent) when done."""

    response: aiohttp.ClientResponse
    first: bytes
    idle_s: float
    url: str

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def content_type(self) -> str:
        return self.response.headers.get("Content-Type", "application/json")

    async def chunks(self) -> AsyncIterator[bytes]:
        """Chunks after ``first``. Raises UpstreamError when the backend breaks or stalls (> idle_s)."""
        content = self.response.content
        while True:
            try:
                chunk = await asyncio.wait_for(content.readany(), self.idle_s)
            except asyncio.TimeoutError as exc:
                raise UpstreamTimeout(f"{self.url} stalled mid-stream", retryable=False) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(f"{self.url} broke mid-stream: {exc!r}", retryable=False) from exc
            if not chunk:
                if not content.is_eof():
                    raise UpstreamError(f"{self.url} broke mid-stream", retryable=False)
                return
            yield chunk

    async def read_rest(self) -> bytes:
        parts = [self.first]
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        self.response.close()


class Backends:
    def __init__(self, *, connect_s: float, connections: int) -> None:
        self._connect_s = connect_s
        self._connections = connections
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, url: str) -> aiohttp.ClientSession:
        """The session (connection pool) of one backend, created on first use."""
        sess = self._sessions.get(url)
        if sess is None or sess.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=self._connections,
                                             keepalive_timeout=30, enable_cleanup_closed=True)
            sess = aiohttp.ClientSession(base_url=None, connector=connector, auto_decompress=False,
                                         skip_auto_headers=("User-Agent",))
            self._sessions[url] = sess
        return sess

    def _timeout(self, total_s: float | None, read_s: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total_s, connect=self._connect_s, sock_read=read_s)

    async def open_stream(self, url: str, path: str, payload: bytes, *, first_byte_s: float, idle_s: float,
                          headers: dict[str, str] | None = None, hold_opening: bool = False) -> UpstreamStream:
        """POST ``payload`` and wait for the status and the first body bytes (≤ first_byte_s).

        ``hold_opening``: for an event stream, wait (same deadline) until an event carries output, so a
        stream that opens with an error raises instead of reaching the client.

        Raises:
            UpstreamError / UpstreamTimeout / UpstreamRejected (see module doc).
        """
        hdrs = _JSON_HEADERS if headers is None else {**_JSON_HEADERS, **headers}
        resp: aiohttp.ClientResponse | None = None
        try:
            async def _start() -> tuple[aiohttp.ClientResponse, bytes]:
                r = await self.session(url).post(url + path, data=payload, headers=hdrs,
                                                 timeout=self._timeout(None, None))
                nonlocal resp
                resp = r
                if r.status != 200:
                    body = await r.content.read(_MAX_ERROR_BODY)
                    raise _status_error(url, r.status, body)
                first = await r.content.readany()
                if hold_opening and r.headers.get("Content-Type", "").startswith("text/event-stream"):
                    first = await _read_opening(url, r, first)
                return r, first

            r, first = await asyncio.wait_for(_start(), first_byte_s)
        except asyncio.TimeoutError as exc:
            if resp is not None:
                resp.close()
            raise UpstreamTimeout(f"{url} sent no first byte within {first_byte_s}s") from exc
        except UpstreamError:
            if resp is not None:
                resp.close()
            raise
        except (aiohttp.ClientError, OSError) as exc:
            if resp is not None:
                resp.close()
            raise UpstreamError(f"{url} unreachable: {exc!r}") from exc
        except BaseException:
            if resp is not None:
                resp.close()
            raise
        if not first:
            r.close()
            raise UpstreamError(f"{url} sent an empty response")
        return UpstreamStream(r, first, idle_s, url)

    async def post_json(self, url: str, path: str, payload: bytes, *, timeout_s: float,
                        headers: dict[str, str] | None = None) -> bytes:
        """POST and read the whole answer within ``timeout_s``; returns the body of a 200."""
        stream = await self.open_stream(url, path, payload, first_byte_s=timeout_s, idle_s=timeout_s,
                                        headers=headers)
        try:
            return await asyncio.wait_for(stream.read_rest(), timeout_s)
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout(f"{url} did not finish within {timeout_s}s") from exc
        except UpstreamError as exc:
            raise UpstreamError(str(exc)) from exc  # nothing reached the client: retryable
        finally:
            stream.close()

    async def get(self, url: str, path: str, *, timeout_s: float) -> tuple[int, bytes]:
        """GET; returns (status, body). Raises UpstreamError on connection failure/timeout."""
        try:
            async with self.session(url).get(url + path, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                return r.status, await r.read()
        except asyncio.TimeoutError as exc:
            raise UpstreamTimeout(f"{url}{path} timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"{url} unreachable: {exc!r}") from exc

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for sess in sessions:
            await sess.close()


async def _read_opening(url: str, r: aiohttp.ClientResponse, first: bytes) -> bytes:
    """Reads on until the stream's events carry output; raises UpstreamFailedRequest on an opening error."""
    state = classify_opening(first)
    while state.kind is Opening.INCOMPLETE:
        more = await r.content.readany()
        if not more:
            break  # ended without output: passed on as it is
        first += more
        state = classify_opening(first)
    if state.kind is Opening.ERROR:
        error = state.error or {}
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
        message = str(error.get("message") or "error event")[:500]
        raise UpstreamFailedRequest(f"{url} failed the request before any output: {message}", status=status,
                                    body=json.dumps({"error": error}).encode())
    return first
