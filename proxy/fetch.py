"""Reading media bytes: data: URLs inline, file:// under the allowed directory, http(s) with limits.

One shared aiohttp session for downloads (created lazily, closed with the app). http(s) downloads stop at
``max_nbytes`` and ``fetch_timeout_s``; with ``deny_private_networks`` hosts resolving to internal addresses
are refused (checked on every resolution, so a rebinding DNS answer is refused too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from proxy.errors import MediaError, PayloadTooLarge
from proxy.media import (
    MediaPolicy,
    UrlKind,
    check_http_url,
    classify_url,
    decode_data_url,
    is_denied_address,
    resolve_file_url,
)


@dataclass(frozen=True, slots=True)
class Media:
    """Bytes of one media item; ``url`` is the original when it was already a data: URL."""

    data: bytes
    mime: str
    url: str | None = None
    declared_mime: bool = False  # mime came from a data: URL (the client said it), not a server


# What _DenyingResolver asks for addresses; tests and the hostile-input target swap in a fake (no real DNS).
RESOLVER_FACTORY: Callable[[], AbstractResolver] = DefaultResolver


class InternalAddressRefused(OSError):
    """A media host resolved to an address the deny-list refuses (raised inside the resolver)."""


class _DenyingResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = RESOLVER_FACTORY()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        hosts = await self._inner.resolve(host, port, family)
        for h in hosts:
            if is_denied_address(str(h["host"])):
                raise InternalAddressRefused(f"media host {host} resolves to an internal address")
        return hosts

    async def close(self) -> None:
        await self._inner.close()


class MediaFetcher:
    def __init__(self, policy: MediaPolicy) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = _DenyingResolver() if self.policy.deny_private_networks else None
            connector = aiohttp.TCPConnector(limit=64, resolver=resolver)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def fetch(self, url: str) -> Media:
        """Bytes of the media at ``url``.

        Raises:
            MediaError: forbidden or unreadable URL. PayloadTooLarge: over ``max_nbytes``.
        """
        kind = classify_url(url)
        if kind is UrlKind.DATA:
            if len(url) > (1 << 20):  # big inline image: decode off the event loop
                mime, data = await asyncio.to_thread(decode_data_url, url, self.policy.max_nbytes)
            else:
                mime, data = decode_data_url(url, self.policy.max_nbytes)
            return Media(data, mime, url, declared_mime=True)
        if kind is UrlKind.FILE:
            path = resolve_file_url(url, self.policy.allowed_file_dir)
            return Media(await asyncio.to_thread(self._read_file, path), "application/octet-stream")
        return await self._fetch_http(url)

    def _read_file(self, path: Any) -> bytes:
        try:
            with open(path, "rb") as fh:
                data = fh.read(self.policy.max_nbytes + 1)
        except OSError as exc:
            raise MediaError(f"cannot read file:// media: {exc.strerror}") from exc
        if len(data) > self.policy.max_nbytes:
            raise PayloadTooLarge(f"media item larger than {self.policy.max_nbytes} bytes")
        return data

    async def _fetch_http(self, url: str) -> Media:
        if not self.policy.allow_http:
            raise MediaError("http(s) media urls are disabled")
        host, _ = check_http_url(url)
        if self.policy.deny_private_networks:
            try:
                literal = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                literal = None
            if literal is not None and is_denied_address(str(literal)):
                raise MediaError("media url points to an internal address")
        limit = self.policy.max_nbytes
        try:
            timeout = aiohttp.ClientTimeout(total=self.policy.fetch_timeout_s)
            async with self._http().get(url, timeout=timeout, allow_redirects=not self.policy.deny_private_networks,
                                         max_redirects=3) as resp:
                if resp.status != 200:
                    raise MediaError(f"fetching media failed: HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > limit:
                    raise PayloadTooLarge(f"media item larger than {limit} bytes")
                chunks: list[bytes] = []
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(f"media item larger than {limit} bytes")
                    chunks.append(chunk)
                mime = resp.content_type or "application/octet-stream"
        except asyncio.TimeoutError as exc:
            raise MediaError("fetching media timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            cause = getattr(exc, "os_error", None) or exc.__cause__ or exc
            if isinstance(cause, InternalAddressRefused):
                raise MediaError(f"media url points to an internal address ({cause})") from exc
            raise MediaError(f"fetching media failed: {exc}") from exc
        data = b"".join(chunks)
        if not data:
            raise MediaError("empty media item")
        return Media(data, mime)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
