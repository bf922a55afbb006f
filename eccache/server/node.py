"""CacheNode: one server's domain logic, between the gRPC servicer and the index, pool and engine.

Lifecycle: `CacheNode(config)` builds the pool (and registers it with Mooncake), `start(address)`
claims the node name (its previous incarnation's entries become misses), begins heartbeats and
reconciliation; `stop()` retires the pool so its entries read as MISSING at once.
All methods are thread-safe and raise eccache errors only.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import msgpack

from eccache import validation as v
from eccache.errors import InvalidArgument, LeaseExpired, NotFound, Unavailable
from eccache.index import Index, IndexEntry
from eccache.keys import EntryKey
from eccache.pool.pool import Pool
from eccache.server.config import ServerConfig
from eccache.transport.inline import CHUNK_BYTES
from eccache.types import Acquired, EntryInfo, EntrySpec, EntryState, Location, Reservation, ReserveOutcome

log = logging.getLogger(__name__)
_POOL_CACHE_S = 1.0


@dataclass(frozen=True, slots=True)
class PoolInfo:
    node_address: str
    te_session: str
    base_address: int


@dataclass(slots=True)
class Counters:
    lookups: int = 0
    hits: int = 0
    misses: int = 0
    bytes_in: int = 0  # bytes reserved for writing
    bytes_out: int = 0  # bytes handed out under read leases
    read_leases: int = 0


@dataclass(frozen=True, slots=True)
class LookupResult:
    state: EntryState
    info: EntryInfo | None


class CacheNode:
    def __init__(self, config: ServerConfig, index: Index | None = None) -> None:
        self.config = config
        self.index = index or Index.connect(config.redis_url)
        self.pool_id = uuid.uuid4().hex
        self.pool = Pool(config.pool_nbytes, self.index, self.pool_id)
        self.counters = Counters()
        self.node_address = ""
        self.engine = None
        if config.transport == "mooncake":
            from eccache.transport.mooncake import Engine

            self.engine = Engine(config.te_host, config.te_protocol)
            self.engine.register(self.pool.base_address, self.pool.nbytes)
        self._writes: dict[str, tuple[EntryKey, int, int]] = {}  # lease -> (key, offset, nbytes)
        self._writes_lock = threading.Lock()
        self._pool_cache: dict[str, tuple[float, PoolInfo | None]] = {}
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self._dead_pools: set[str] = set()  # seen dead, their index entries still to purge
        self._purged_pools: set[str] = set()

    @property
    def te_session(self) -> str:
        return self.engine.session if self.engine else ""

    @property
    def transports(self) -> list[str]:
        return ["mooncake", "inline"] if self.engine else ["inline"]

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, node_address: str) -> None:
        self.node_address = node_address
        name = self.config.node_name or node_address
        old = self.index.claim_node(name, self.pool_id)
        if old and old != self.pool_id:
            log.info("node %s restarted: entries of pool %s now read as missing", name, old)
            self._dead_pools.add(old)
        self._beat()
        self._housekeeper = threading.Thread(target=self._housekeep, name="eccache-housekeeping",
                                             daemon=True)
        self._housekeeper.start()

    def stop(self) -> None:
        self._stop.set()
        if self._housekeeper:
            self._housekeeper.join(timeout=5)
        try:
            self.index.retire_pool(self.config.node_name or self.node_address, self.pool_id)
        except Unavailable:
            log.warning("redis unreachable at shutdown: pool %s expires with its heartbeat", self.pool_id)
        if self.engine:
            self.engine.close()

    def _beat(self) -> None:
        info = msgpack.packb([self.node_address, self.te_session, self.pool.base_address])
        self.index.heartbeat(self.config.node_name or self.node_address, self.pool_id, info,
                             ttl_ms=3 * self.config.heartbeat_ms)

    def _housekeep(self) -> None:
        while not self._stop.wait(self.config.heartbeat_ms / 1000):
            try:
                self._beat()
                self.pool.reconcile()
                self._purge_dead_pools()
            except Unavailable as exc:
                log.warning("housekeeping skipped: %s", exc)
            except Exception:  # the loop must survive anything; the next beat retries
                log.exception("housekeeping failed")

    def _purge_dead_pools(self) -> None:
        """Removes index entries of pools that no longer exist, so Redis does not keep them forever."""
        for pool_id in list(self._dead_pools - self._purged_pools):
            purged = self.index.purge_pool(pool_id)
            self._purged_pools.add(pool_id)
            self._dead_pools.discard(pool_id)
            if purged:
                log.info("purged %d index entries of dead pool %s", purged, pool_id)

    # ---- pool registry ------------------------------------------------------------------------
    def _pools(self, pool_ids: Iterable[str]) -> dict[str, PoolInfo | None]:
        now = time.monotonic()
        out: dict[str, PoolInfo | None] = {}
        unknown: list[str] = []
        for pool_id in set(pool_ids):
            if pool_id == self.pool_id:
                out[pool_id] = PoolInfo(self.node_address, self.te_session, self.pool.base_address)
            elif (cached := self._pool_cache.get(pool_id)) and now - cached[0] < _POOL_CACHE_S:
                out[pool_id] = cached[1]
            else:
                unknown.append(pool_id)
        if unknown:
            for pool_id, raw in zip(unknown, self.index.pool_infos(unknown)):
                info = PoolInfo(*msgpack.unpackb(raw)) if raw else None
                self._pool_cache[pool_id] = (now, info)
                out[pool_id] = info
                if info is None and pool_id not in self._purged_pools:
                    self._dead_pools.add(pool_id)
        return out

    def _location(self, entry: IndexEntry, info: PoolInfo) -> Location:
        return Location(pool_id=entry.pool_id, node_address=info.node_address, te_session=info.te_session,
                        base_address=info.base_address, offset=entry.offset, nbytes=entry.nbytes)

    # ---- reads --------------------------------------------------------------------------------
    def lookup(self, namespace: str, identifiers: Sequence[str]) -> list[LookupResult]:
        v.check_namespace(namespace)
        ids = v.check_identifiers(identifiers)
        entries = self.index.get_many([EntryKey(namespace, i) for i in ids])
        pools = self._pools(e.pool_id for e in entries if e is not None)
        now_ms = int(time.time() * 1000)
        out = []
        for identifier, entry in zip(ids, entries):
            if entry is None or pools.get(entry.pool_id) is None or (
                    entry.state is EntryState.READY and entry.expires_ms and entry.expires_ms <= now_ms):
                out.append(LookupResult(EntryState.MISSING, None))
                continue
            out.append(LookupResult(entry.state, _info(identifier, entry)))
        hits = sum(r.state is EntryState.READY for r in out)
        self.counters.lookups += len(ids)
        self.counters.hits += hits
        self.counters.misses += len(ids) - hits
        return out

    def acquire(self, namespace: str, identifiers: Sequence[str], lease_ms: int) -> list[Acquired | None]:
        v.check_namespace(namespace)
        ids = v.check_identifiers(identifiers)
        lease_ms = v.check_lease_ms(lease_ms, self.config.read_lease_ms)
        keys = [EntryKey(namespace, i) for i in ids]
        lease_ids = [secrets.token_hex(16) for _ in ids]
        results = self.index.acquire_many(keys, lease_ids, lease_ms)
        pools = self._pools(r[1].pool_id for r in results if r is not None)
        out: list[Acquired | None] = []
        stale: list[tuple[EntryKey, str]] = []
        for key, lease_id, result in zip(keys, lease_ids, results):
            info = pools.get(result[1].pool_id) if result else None
            if result is None or info is None:
                if result is not None:
                    stale.append((key, lease_id))
                out.append(None)
                continue
            expires, entry = result
            out.append(Acquired(namespace, _info(key.identifier, entry), lease_id,
                                self._location(entry, info), expires))
        if stale:
            self.index.release_many(stale)
        hits = sum(a is not None for a in out)
        self.counters.hits += hits
        self.counters.misses += len(ids) - hits
        self.counters.read_leases += hits
        self.counters.bytes_out += sum(a.info.nbytes for a in out if a is not None)
        return out

    def release(self, leases: Sequence[tuple[str, str, str]]) -> int:
        if len(leases) > v.MAX_IDS_PER_BATCH:
            raise InvalidArgument(f"at most {v.MAX_IDS_PER_BATCH} leases per call")
        refs = [(EntryKey(v.check_namespace(ns), v.check_identifier(i)), v.check_lease_id(lease))
                for ns, i, lease in leases]
        released = self.index.release_many(refs)
        self.counters.read_leases = max(0, self.counters.read_leases - released)
        return released

    # ---- writes -------------------------------------------------------------------------------
    def reserve(self, spec: EntrySpec, lease_ms: int) -> Reservation:
        v.check_namespace(spec.namespace)
        v.check_identifier(spec.identifier)
        v.check_layout(spec.shape, spec.dtype, spec.nbytes, self.pool.nbytes)
        v.check_metadata(spec.metadata)
        v.check_ttl_s(spec.ttl_s)
        lease_ms = v.check_lease_ms(lease_ms, self.config.write_lease_ms)
        key = EntryKey(spec.namespace, spec.identifier)
        existing = self.index.get_many([key])[0]
        dead_pool = ""
        if existing is not None:
            if self._pools([existing.pool_id])[existing.pool_id] is None:
                dead_pool = existing.pool_id
            elif existing.state is EntryState.READY and not existing.expires_ms:
                return Reservation(ReserveOutcome.EXISTS)  # fast path: no allocation, no eviction
        block = self.pool.allocate(key, spec.nbytes)
        lease_id = secrets.token_hex(16)
        try:
            outcome, expires = self.index.reserve(
                key, lease_id=lease_id, lease_ms=lease_ms, pool_id=self.pool_id, offset=block.offset,
                nbytes=spec.nbytes, shape=spec.shape, dtype=spec.dtype, metadata=spec.metadata,
                ttl_s=spec.ttl_s, dead_pool=dead_pool)
        except BaseException:
            self.pool.free(block.offset)
            raise
        if outcome is not ReserveOutcome.RESERVED:
            self.pool.free(block.offset)
            return Reservation(outcome, lease_expires_ms=expires)
        with self._writes_lock:
            self._writes[lease_id] = (key, block.offset, spec.nbytes)
        location = Location(self.pool_id, self.node_address, self.te_session, self.pool.base_address,
                            block.offset, spec.nbytes)
        self.counters.bytes_in += spec.nbytes
        return Reservation(ReserveOutcome.RESERVED, lease_id, location, expires)

    def commit(self, namespace: str, identifier: str, lease_id: str, checksum: int) -> None:
        key = EntryKey(v.check_namespace(namespace), v.check_identifier(identifier))
        with self._writes_lock:
            write = self._writes.get(lease_id)
        self.index.commit(key, lease_id=v.check_lease_id(lease_id), checksum=checksum,
                          pool_id=self.pool_id if write else None)
        with self._writes_lock:
            self._writes.pop(lease_id, None)
        if write is not None:
            self.pool.mark_ready(write[1])

    def abort(self, namespace: str, identifier: str, lease_id: str) -> None:
        key = EntryKey(v.check_namespace(namespace), v.check_identifier(identifier))
        dropped = self.index.abort(key, lease_id=v.check_lease_id(lease_id))
        with self._writes_lock:
            self._writes.pop(lease_id, None)
        if dropped and dropped[0] == self.pool_id:
            self.pool.free(dropped[1])

    def delete(self, namespace: str, identifiers: Sequence[str], if_checksum: int = 0) -> int:
        v.check_namespace(namespace)
        ids = v.check_identifiers(identifiers)
        return self.index.delete_many([EntryKey(namespace, i) for i in ids], if_checksum=if_checksum)

    # ---- aliases ------------------------------------------------------------------------------
    def set_alias(self, alias: str, namespace: str) -> None:
        self.index.set_alias(v.check_alias(alias), v.check_namespace(namespace))

    def resolve_alias(self, alias: str) -> str | None:
        return self.index.resolve_alias(v.check_alias(alias))

    # ---- inline data plane ----------------------------------------------------------------------
    def write_inline(self, first: tuple[str, str, str], chunks: Iterator[bytes]) -> int:
        namespace, identifier, lease_id = first
        with self._writes_lock:
            write = self._writes.get(v.check_lease_id(lease_id))
        if write is None or write[0] != EntryKey(namespace, identifier):
            raise LeaseExpired("no write lease of this server matches; Reserve first")
        _, offset, nbytes = write
        view = self.pool.slot_bytes(offset, nbytes)
        pos = 0
        for data in chunks:
            if pos + len(data) > nbytes:
                raise InvalidArgument(f"more than the reserved {nbytes} bytes sent")
            view[pos:pos + len(data)] = memoryview(data)
            pos += len(data)
        return pos

    def read_inline(self, namespace: str, identifier: str, lease_id: str) -> Iterator[bytes]:
        key = EntryKey(v.check_namespace(namespace), v.check_identifier(identifier))
        v.check_lease_id(lease_id)
        entry = self.index.get_many([key])[0]
        if entry is None or entry.state is not EntryState.READY:
            raise NotFound(f"{identifier!r} is not READY")
        if entry.pool_id != self.pool_id:
            raise NotFound(f"{identifier!r} lives in another server's pool")
        if not self.index.lease_held(key, lease_id):
            raise LeaseExpired("read lease is not held; Acquire first")
        view = self.pool.slot_bytes(entry.offset, entry.nbytes)
        for start in range(0, entry.nbytes, CHUNK_BYTES):
            yield view[start:start + CHUNK_BYTES].tobytes()


def _info(identifier: str, entry: IndexEntry) -> EntryInfo:
    return EntryInfo(identifier=identifier, shape=entry.shape, dtype=entry.dtype, nbytes=entry.nbytes,
                     checksum=entry.checksum, metadata=entry.metadata, hits=entry.hits,
                     created_ms=entry.created_ms)
