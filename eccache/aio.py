"""The asyncio client (grpc.aio), for the proxy and the connector's scheduler side.

Metadata calls are native async. Data calls (`put`, `get`) run the synchronous client in a worker
thread: Mooncake transfers are blocking C++ calls either way. Same names and failure rules as
`Client`: reads return misses, writes raise.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from eccache.client import Client, auth_metadata, open_channel
from eccache.errors import ECCacheError, from_rpc_error
from eccache.types import Acquired, EntryInfo, PutOutcome
from eccache.wire import acquired_from_pb, ready_entries

log = logging.getLogger(__name__)


class AsyncClient:
    """Async client of one eccache server (see `Client` for the arguments)."""

    def __init__(self, address: str, auth_token: str | None = None, transport: str | None = None, *,
                 tls_ca: bytes | str | None = None, timeout_s: float = 5.0) -> None:
        self.address = address
        self._auth_token = auth_token
        self._transport = transport
        self._tls_ca = tls_ca
        self._metadata = auth_metadata(auth_token)
        self._timeout_s = timeout_s
        self._channel: Any = None
        self._stub: pb_grpc.ECCacheStub | None = None
        self._sync: Client | None = None
        self.counters: Counter[str] = Counter()

    async def _call(self, method: str, request: Any) -> Any:
        if self._stub is None:
            self._channel = open_channel(self.address, self._tls_ca, aio=True)
            self._stub = pb_grpc.ECCacheStub(self._channel)
        try:
            return await getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def _sync_client(self) -> Client:
        if self._sync is None:
            self._sync = Client(self.address, self._auth_token, self._transport, tls_ca=self._tls_ca,
                                timeout_s=self._timeout_s)
        return self._sync

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- reads (never raise) ------------------------------------------------------------------
    async def lookup_entries(self, namespace: str, identifiers: Sequence[str], *,
                             raise_errors: bool = False) -> list[EntryInfo | None]:
        """READY entries' metadata; on failure all None (counted), or the error with raise_errors."""
        ids = list(identifiers)
        try:
            response = await self._call("Lookup", pb.LookupRequest(namespace=namespace, identifiers=ids))
        except ECCacheError as exc:
            if raise_errors:
                raise
            self._count_failure("lookup_errors", exc)
            return [None] * len(ids)
        return ready_entries(response)

    async def lookup(self, namespace: str, identifiers: Sequence[str]) -> list[bool]:
        return [e is not None for e in await self.lookup_entries(namespace, identifiers)]

    async def acquire(self, namespace: str, identifiers: Sequence[str],
                      lease_ms: int = 0) -> list[Acquired | None]:
        ids = list(identifiers)
        try:
            response = await self._call("Acquire", pb.AcquireRequest(namespace=namespace, identifiers=ids,
                                                                     lease_ms=lease_ms))
        except ECCacheError as exc:
            self._count_failure("lookup_errors", exc)
            return [None] * len(ids)
        return [acquired_from_pb(namespace, e) for e in response.entries]

    async def release(self, acquired: Sequence[Acquired | None]) -> int:
        leases = [pb.LeaseRef(namespace=a.namespace, identifier=a.info.identifier, lease_id=a.lease_id)
                  for a in acquired if a is not None]
        if not leases:
            return 0
        try:
            return (await self._call("Release", pb.ReleaseRequest(leases=leases))).released
        except ECCacheError as exc:
            self._count_failure("release_errors", exc)
            return 0

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            return (await self._call("ResolveAlias", pb.ResolveAliasRequest(alias=alias))).namespace or None
        except ECCacheError as exc:
            self._count_failure("lookup_errors", exc)
            return None

    async def get(self, namespace: str, identifier: str) -> np.ndarray | None:
        return await asyncio.to_thread(self._sync_client().get, namespace, identifier)

    # ---- writes (raise) -----------------------------------------------------------------------
    async def put(self, namespace: str, identifier: str, array: Any, metadata: bytes = b"") -> PutOutcome:
        return await asyncio.to_thread(self._sync_client().put, namespace, identifier, array, metadata)

    async def set_alias(self, alias: str, namespace: str) -> None:
        await self._call("SetAlias", pb.SetAliasRequest(alias=alias, namespace=namespace))

    async def delete(self, namespace: str, identifiers: Sequence[str]) -> int:
        return (await self._call("Delete", pb.DeleteRequest(namespace=namespace,
                                                            identifiers=list(identifiers)))).deleted

    def _count_failure(self, counter: str, exc: BaseException) -> None:
        self.counters[counter] += 1
        log.debug("eccache %s: %s", counter, exc)
