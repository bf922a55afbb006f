"""The synchronous client: put, get, lookup, acquire/read/release, delete, aliases, stats.

Write calls raise eccache errors. Read calls (`get`, `lookup`, `lookup_entries`, `acquire`,
`read_into`) never raise on failure: they return a miss and count it in `counters`, because a cache
that fails must only make a request slower, never fail it. Every read verifies the xxh3 checksum
committed by the writer; a mismatch drops that entry version so the next request recomputes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import xxhash

from eccache import arrays
from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from eccache.errors import ECCacheError, IntegrityError, InvalidArgument, from_rpc_error
from eccache.transport.base import Transport
from eccache.types import Acquired, EntryInfo, PutOutcome, ReserveOutcome
from eccache.wire import OUTCOME_FROM_PB, acquired_from_pb, location_from_pb, ready_entries

log = logging.getLogger(__name__)
# gRPC's default reconnect backoff grows to 120 s: a client that saw its server down for a minute would
# keep failing fast (every read a miss) for minutes after the server is back. A cache node is a
# LAN neighbour, so reconnect attempts are cheap: capped at 1 s.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20),
                   ("grpc.keepalive_time_ms", 30_000), ("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1_000)]


def checksum(data: np.ndarray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


def open_channel(address: str, tls_ca: bytes | str | None, aio: bool = False) -> Any:
    module = grpc.aio if aio else grpc
    if tls_ca is None:
        return module.insecure_channel(address, options=CHANNEL_OPTIONS)
    if isinstance(tls_ca, str):
        with open(tls_ca, "rb") as f:
            tls_ca = f.read()
    return module.secure_channel(address, grpc.ssl_channel_credentials(tls_ca), options=CHANNEL_OPTIONS)


def auth_metadata(auth_token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {auth_token}"),) if auth_token else ()


class Client:
    """Client of one eccache server.

    Args:
        address: "host:port" of the server.
        auth_token: bearer token when the server requires one.
        transport: "mooncake", "inline", or None to pick Mooncake when both sides have it.
        tls_ca: PEM bytes or a file path of the CA that signed the server's certificate.
        timeout_s: deadline of each metadata RPC.
    """

    def __init__(self, address: str, auth_token: str | None = None, transport: str | None = None, *,
                 tls_ca: bytes | str | None = None, timeout_s: float = 5.0, staging_bytes: int = 0,
                 te_host: str | None = None) -> None:
        if transport not in (None, "mooncake", "inline"):
            raise InvalidArgument(f"transport must be mooncake, inline or None, not {transport!r}")
        self.address = address
        self._tls_ca = tls_ca
        self._metadata = auth_metadata(auth_token)
        self._timeout_s = timeout_s
        self._channels: dict[str, Any] = {}
        self._stubs: dict[str, pb_grpc.ECCacheStub] = {}
        self._lock = threading.Lock()
        self._requested_transport = transport
        self._staging_bytes = staging_bytes
        # where this client's Mooncake engine is reachable by pool owners (a container's own address)
        self._te_host = te_host or os.environ.get("ECCACHE_CLIENT_TE_HOST", "127.0.0.1")
        self._transport: Transport | None = None
        self.counters: Counter[str] = Counter()

    # ---- plumbing -----------------------------------------------------------------------------
    def _stub(self, address: str | None = None) -> pb_grpc.ECCacheStub:
        address = address or self.address
        with self._lock:
            stub = self._stubs.get(address)
            if stub is None:
                self._channels[address] = open_channel(address, self._tls_ca)
                stub = self._stubs[address] = pb_grpc.ECCacheStub(self._channels[address])
            return stub

    def _call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return getattr(self._stub(), method)(request, metadata=self._metadata,
                                                 timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    @property
    def transport(self) -> Transport:
        """The data plane, chosen on first use (Mooncake when the server offers it and it imports)."""
        if self._transport is None:
            self._transport = self._make_transport()
        return self._transport

    def _make_transport(self) -> Transport:
        wanted = self._requested_transport
        if wanted is None:
            from eccache.transport import mooncake

            offered = self._call("Stats", pb.StatsRequest()).transports
            wanted = "mooncake" if "mooncake" in offered and mooncake.available() else "inline"
        if wanted == "mooncake":
            from eccache.transport.mooncake import MooncakeTransport

            return MooncakeTransport(self._te_host, staging_bytes=self._staging_bytes)
        from eccache.transport.inline import InlineTransport

        return InlineTransport(self._stub, self._metadata)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writes (raise) -----------------------------------------------------------------------
    def put(self, namespace: str, identifier: str, array: Any, metadata: bytes = b"", *,
            ttl_s: int = 0, lease_ms: int = 0) -> PutOutcome:
        """Stores array under (namespace, identifier) unless the key is READY or being written.

        Returns PutOutcome.STORED, EXISTS or IN_PROGRESS. Raises CapacityExhausted when the pool is
        full of leased entries, InvalidArgument for bad input, TransportError when bytes cannot move.
        """
        flat = arrays.flatten(array)
        response = self._call("Reserve", pb.ReserveRequest(
            namespace=namespace, identifier=identifier, shape=flat.shape, dtype=flat.dtype,
            nbytes=flat.data.nbytes, metadata=metadata, lease_ms=lease_ms, ttl_s=ttl_s))
        outcome = OUTCOME_FROM_PB[response.outcome]
        if outcome is not ReserveOutcome.RESERVED:
            return PutOutcome(outcome.value)

        try:
            self.transport.write(namespace, identifier, response.lease_id,
                                 location_from_pb(response.location), memoryview(flat.data))
            self._call("Commit", pb.CommitRequest(namespace=namespace, identifier=identifier,
                                                  lease_id=response.lease_id, checksum=checksum(flat.data)))
        except BaseException:
            self._abort_quietly(namespace, identifier, response.lease_id)
            raise
        self.counters["puts"] += 1
        return PutOutcome.STORED

    def _abort_quietly(self, namespace: str, identifier: str, lease_id: str) -> None:
        try:
            self._call("Abort", pb.AbortRequest(namespace=namespace, identifier=identifier, lease_id=lease_id))
        except ECCacheError as exc:  # the write lease expires on its own
            log.debug("abort of %s failed: %s", identifier, exc)

    def delete(self, namespace: str, identifiers: Sequence[str] | str) -> int:
        ids = [identifiers] if isinstance(identifiers, str) else list(identifiers)
        return self._call("Delete", pb.DeleteRequest(namespace=namespace, identifiers=ids)).deleted

    def set_alias(self, alias: str, namespace: str) -> None:
        self._call("SetAlias", pb.SetAliasRequest(alias=alias, namespace=namespace))

    def stats(self) -> dict[str, Any]:
        msg = self._call("Stats", pb.StatsRequest())
        return {f.name: (v if isinstance(v, int | str) else list(v))
                for f in msg.DESCRIPTOR.fields for v in [getattr(msg, f.name)]}

    # ---- reads (never raise) ------------------------------------------------------------------
    def resolve_alias(self, alias: str) -> str | None:
        try:
            return self._call("ResolveAlias", pb.ResolveAliasRequest(alias=alias)).namespace or None
        except ECCacheError as exc:
            self._count_failure("lookup_errors", exc)
            return None

    def lookup(self, namespace: str, identifiers: Sequence[str]) -> list[bool]:
        return [e is not None for e in self.lookup_entries(namespace, identifiers)]

    def lookup_entries(self, namespace: str, identifiers: Sequence[str], *,
                       raise_errors: bool = False) -> list[EntryInfo | None]:
        """READY entries' metadata (None for anything else, and for every id on failure, counted;
        with raise_errors the failure is raised instead)."""
        ids = list(identifiers)
        try:
            response = self._call("Lookup", pb.LookupRequest(namespace=namespace, identifiers=ids))
        except ECCacheError as exc:
            if raise_errors:
                raise
            self._count_failure("lookup_errors", exc)
            return [None] * len(ids)
        return ready_entries(response)

    def acquire(self, namespace: str, identifiers: Sequence[str], lease_ms: int = 0) -> list[Acquired | None]:
        """Read leases on READY entries: eviction cannot remove them until release or lease expiry."""
        ids = list(identifiers)
        try:
            response = self._call("Acquire", pb.AcquireRequest(namespace=namespace, identifiers=ids,
                                                               lease_ms=lease_ms))
        except ECCacheError as exc:
            self._count_failure("lookup_errors", exc)
            return [None] * len(ids)
        return [acquired_from_pb(namespace, e) for e in response.entries]

    def release(self, acquired: Sequence[Acquired | None]) -> int:
        leases = [pb.LeaseRef(namespace=a.namespace, identifier=a.info.identifier, lease_id=a.lease_id)
                  for a in acquired if a is not None]
        if not leases:
            return 0
        try:
            return self._call("Release", pb.ReleaseRequest(leases=leases)).released
        except ECCacheError as exc:  # leases expire on their own
            self._count_failure("release_errors", exc)
            return 0

    def read_into(self, acquired: Acquired, out: Any) -> bool:
        """Copies an acquired entry's bytes into out (≥ nbytes, writable) and verifies the checksum.

        Returns False on any failure; a checksum mismatch also drops that entry version.
        """
        nbytes = acquired.info.nbytes
        try:
            view = _writable_bytes(out, nbytes)
            self.transport.read_into(acquired.namespace, acquired.info.identifier, acquired.lease_id,
                                     acquired.location, view)
            if checksum(view) != acquired.info.checksum:
                raise IntegrityError(f"checksum mismatch for {acquired.info.identifier!r}")
        except IntegrityError as exc:
            self._count_failure("checksum_failures", exc)
            self._drop(acquired)
            return False
        except Exception as exc:  # the read path never fails a request: it is a miss
            self._count_failure("read_errors", exc)
            return False
        self.counters["hits"] += 1
        return True

    def _drop(self, acquired: Acquired) -> None:
        try:
            self._call("Delete", pb.DeleteRequest(namespace=acquired.namespace,
                                                  identifiers=[acquired.info.identifier],
                                                  if_checksum=acquired.info.checksum))
        except ECCacheError as exc:
            log.warning("could not drop corrupt entry %s: %s", acquired.info.identifier, exc)

    def _read(self, namespace: str, identifier: str) -> tuple[EntryInfo, np.ndarray] | None:
        acquired = self.acquire(namespace, [identifier])[0]
        if acquired is None:
            self.counters["misses"] += 1
            return None
        try:
            data = np.empty(acquired.info.nbytes, dtype=np.uint8)
            return (acquired.info, data) if self.read_into(acquired, data) else None
        finally:
            self.release([acquired])

    def get(self, namespace: str, identifier: str) -> np.ndarray | None:
        """The entry as a numpy array (bfloat16 via ml_dtypes), or None on a miss or any failure."""
        found = self._read(namespace, identifier)
        return arrays.to_numpy(found[1], found[0].shape, found[0].dtype) if found else None

    def get_tensor(self, namespace: str, identifier: str, device: str = "cpu") -> Any:
        """The entry as a torch tensor on device, or None on a miss or any failure."""
        found = self._read(namespace, identifier)
        if found is None:
            return None
        tensor = arrays.to_torch(found[1], found[0].shape, found[0].dtype)
        return tensor if device == "cpu" else tensor.to(device)

    def _count_failure(self, counter: str, exc: BaseException) -> None:
        self.counters[counter] += 1
        log.debug("eccache %s: %s", counter, exc)


def _writable_bytes(out: Any, nbytes: int) -> memoryview:
    if arrays.is_torch_tensor(out):
        out = out.view(-1).numpy() if out.device.type == "cpu" else None
        if out is None:
            raise InvalidArgument("read_into needs a CPU buffer")
    view = memoryview(out).cast("B") if not isinstance(out, np.ndarray) else memoryview(out.reshape(-1).view(np.uint8))
    if view.readonly or len(view) < nbytes:
        raise InvalidArgument(f"output buffer must be writable and hold {nbytes} bytes")
    return view[:nbytes]
