"""The proxy's view of eccache: namespace resolution (cached) and batched lookups that never raise.

Lifecycle: built by the app at startup (``open_cache``), closed at shutdown. Any failure - eccache not
configured, unreachable, slow (``lookup_s``), a malformed answer - is an all-miss: the request still works,
only slower (encoder step for every item).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eccache.placeholders import unpack_placeholders

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WarmEntry:
    """A READY entry as the proxy needs it: its placeholder metadata (None if absent/undecodable)."""

    identifier: str
    metadata: Mapping[str, Any] | None


class CacheBackend(Protocol):
    async def lookup_entries(self, namespace: str, ids: list[str], *, raise_errors: bool = False) -> list[Any]: ...
    async def resolve_alias(self, alias: str) -> str | None: ...
    async def close(self) -> None: ...


@dataclass(eq=False)
class CacheView:
    backend: CacheBackend | None
    lookup_timeout_s: float = 0.5
    alias_ttl_s: float = 5.0
    fixed_namespace: str | None = None
    _aliases: dict[str, tuple[float, str | None]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    async def namespace_for(self, model: str) -> str | None:
        """The eccache namespace of a served model name (fixed, or resolved via alias, cached)."""
        if self.fixed_namespace is not None:
            return self.fixed_namespace
        if self.backend is None:
            return None
        now = time.monotonic()
        cached = self._aliases.get(model)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            ns = await asyncio.wait_for(self.backend.resolve_alias(model), self.lookup_timeout_s)
        except Exception as exc:  # noqa: BLE001 - failure = unknown namespace
            log.debug("resolve_alias(%s) failed: %r", model, exc)
            ns = None
        if ns is not None and not isinstance(ns, str):
            ns = None
        # Unresolved names are cached for a shorter time so a connector starting later is seen soon.
        ttl = self.alias_ttl_s if ns else min(self.alias_ttl_s, 1.0)
        self._aliases[model] = (now + ttl, ns or None)
        return ns or None

    async def lookup(self, namespace: str, ids: Sequence[str]) -> list[WarmEntry | None]:
        """One batched lookup; READY entries as WarmEntry, everything else (and any failure) None."""
        if self.backend is None or not ids:
            return [None] * len(ids)
        try:
            infos = await asyncio.wait_for(self.backend.lookup_entries(namespace, list(ids)),
                                           self.lookup_timeout_s)
        except Exception as exc:  # noqa: BLE001 - failure = all-miss
            log.debug("eccache lookup failed: %r", exc)
            return [None] * len(ids)
        if not isinstance(infos, list) or len(infos) != len(ids):
            return [None] * len(ids)
        out: list[WarmEntry | None] = []
        for ident, info in zip(ids, infos, strict=True):
            if info is None:
                out.append(None)
            else:
                out.append(WarmEntry(ident, unpack_placeholders(getattr(info, "metadata", b""))))
        return out

    async def ready(self, namespace: str, ids: Sequence[str]) -> list[bool] | None:
        """Which ids are READY; None when eccache cannot answer (then waiting for them is pointless)."""
        if self.backend is None:
            return None
        try:
            infos = await asyncio.wait_for(self.backend.lookup_entries(namespace, list(ids), raise_errors=True),
                                           self.lookup_timeout_s)
        except Exception as exc:  # noqa: BLE001 - unreachable, slow or failing: unknown
            log.debug("eccache readiness lookup failed: %r", exc)
            return None
        return [info is not None for info in infos]

    async def close(self) -> None:
        if self.backend is not None:
            try:
                await self.backend.close()
            except Exception:  # noqa: BLE001
                log.debug("closing eccache client failed", exc_info=True)


def open_cache(address: str | None, token: str | None, *, lookup_timeout_s: float, alias_ttl_s: float,
               fixed_namespace: str | None) -> CacheView:
    """A CacheView on eccache at ``address`` (None: disabled, all-miss)."""
    backend: CacheBackend | None = None
    if address:
        try:
            from eccache import AsyncClient

            backend = AsyncClient(address, auth_token=token)
        except Exception as exc:  # noqa: BLE001 - client library missing or broken: all-miss
            log.warning("eccache client unavailable (%r): every item is treated as cold", exc)
    return CacheView(backend, lookup_timeout_s=lookup_timeout_s, alias_ttl_s=alias_ttl_s,
                     fixed_namespace=fixed_namespace)
