"""One server's pool: the registered byte region, its slots, eviction and reconciliation with Redis.

Lifecycle of a slot: `allocate` (for a Reserve) → `mark_ready` (after Commit) → `free` (abort, evict,
expire, or reconciliation finding that the index no longer points at it). The pool owns the bytes;
the Redis index owns visibility. Reconciliation frees slots whose entries vanished from the index
(write lease expired, Delete, Redis flushed), so a dead client or a lost index never leaks memory.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from eccache.errors import CapacityExhausted, Unavailable
from eccache.index import Index
from eccache.keys import EntryKey
from eccache.pool.allocator import BestFitAllocator, Block, OutOfSpace
from eccache.types import EntryState

log = logging.getLogger(__name__)

# A slot younger than this is never reconciled away: its Reserve may not have reached Redis yet.
RECONCILE_GRACE_S = 2.0


@dataclass(slots=True)
class SlotRecord:
    key: EntryKey
    size: int
    ready: bool = False
    born: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class PoolCounters:
    evictions: int
    expirations: int
    reclaimed: int


class Pool:
    """A byte region of `nbytes` with best-fit slots. Thread-safe."""

    def __init__(self, nbytes: int, index: Index, pool_id: str, *, align: int = 4096) -> None:
        self.buffer = np.empty(nbytes, dtype=np.uint8)
        self.buffer.fill(0)  # fault every page in now: a first write into cold pages runs at half speed
        self.nbytes = nbytes
        self.pool_id = pool_id
        self._index = index
        self._alloc = BestFitAllocator(nbytes, align)
        self._slots: dict[int, SlotRecord] = {}
        self._lock = threading.RLock()
        self._evictions = self._expirations = self._reclaimed = 0

    @property
    def base_address(self) -> int:
        return int(self.buffer.ctypes.data)

    # ---- queries ------------------------------------------------------------------------------
    def usage(self) -> tuple[int, int, int]:
        """(used, free, largest free block) in bytes."""
        with self._lock:
            return self._alloc.used_bytes, self._alloc.free_bytes, self._alloc.largest_free

    def counts(self) -> tuple[int, int]:
        """(ready slots, pending slots)."""
        with self._lock:
            ready = sum(1 for s in self._slots.values() if s.ready)
            return ready, len(self._slots) - ready

    def counters(self) -> PoolCounters:
        return PoolCounters(self._evictions, self._expirations, self._reclaimed)

    def slot_bytes(self, offset: int, nbytes: int) -> np.ndarray:
        """A view of a slot's bytes (inline transport only; Mooncake never goes through Python)."""
        return self.buffer[offset:offset + nbytes]

    # ---- changes ------------------------------------------------------------------------------
    def allocate(self, key: EntryKey, nbytes: int) -> Block:
        """A slot for key, evicting least-recently-used unleased READY entries when full.

        Raises CapacityExhausted when nothing more can be evicted.
        """
        with self._lock:
            try:
                block = self._alloc.allocate(nbytes)
            except OutOfSpace:
                block = self._evict_until_fits(nbytes)
            self._slots[block.offset] = SlotRecord(key, block.size)
            return block

    def mark_ready(self, offset: int) -> None:
        with self._lock:
            record = self._slots.get(offset)
            if record is not None:
                record.ready = True

    def free(self, offset: int) -> bool:
        with self._lock:
            if self._slots.pop(offset, None) is None:
                return False
            self._alloc.free(offset)
            return True

    def _evict_until_fits(self, nbytes: int) -> Block:
        """Evicts in global LRU order (Redis atime: readers of any server count) until nbytes fit."""
        for offset, record in self._lru_candidates():
            outcome = self._index.evict(record.key, pool_id=self.pool_id, offset=offset)
            if outcome in ("EVICTED", "GONE"):
                self.free(offset)
                self._evictions += outcome == "EVICTED"
                try:
                    return self._alloc.allocate(nbytes)
                except OutOfSpace:
                    continue
        raise CapacityExhausted(
            f"pool full: {nbytes} bytes requested, {self._alloc.free_bytes} free "
            f"(largest block {self._alloc.largest_free}), every READY entry is leased or pending")

    def _lru_candidates(self) -> list[tuple[int, SlotRecord]]:
        ready = [(off, rec) for off, rec in self._slots.items() if rec.ready]
        entries = self._index.get_many([rec.key for _, rec in ready])
        atime = [e.atime_ms if e is not None else -1 for e in entries]  # gone first: free to take
        order = sorted(range(len(ready)), key=lambda i: atime[i])
        return [ready[i] for i in order]

    # ---- reconciliation -----------------------------------------------------------------------
    def reconcile(self, now_ms: int | None = None) -> int:
        """Frees slots the index no longer points at and expires READY entries past their TTL.

        Runs periodically on the server's housekeeping thread. Returns the number of slots freed.
        """
        with self._lock:
            items = [(off, rec) for off, rec in self._slots.items()
                     if time.monotonic() - rec.born > RECONCILE_GRACE_S]
        if not items:
            return 0
        try:
            entries = self._index.get_many([rec.key for _, rec in items])
        except Unavailable:
            return 0  # keep everything: a Redis outage must not free live slots
        freed = 0
        for (offset, record), entry in zip(items, entries):
            if entry is None or entry.pool_id != self.pool_id or entry.offset != offset:
                freed += self.free(offset)
                self._reclaimed += 1
            elif entry.state is EntryState.READY and entry.expires_ms and self._expire(offset, record):
                freed += 1
        return freed

    def _expire(self, offset: int, record: SlotRecord) -> bool:
        if self._index.evict(record.key, pool_id=self.pool_id, offset=offset, mode="ttl") != "EVICTED":
            return False
        self._expirations += 1
        return self.free(offset)

    def clear(self) -> None:
        with self._lock:
            for offset in list(self._slots):
                self.free(offset)
