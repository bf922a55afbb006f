"""Pure bookkeeping of the connector: no I/O, no vLLM, no eccache imports.

- `ResultCache`: resolutions (hit or miss) of identifiers, bounded in entries and trusted for a TTL.
- `LeaseBook`: which request holds which read lease, so each lease is released exactly once.
- `ByteBudget`: bytes waiting in the save queue; a save that does not fit is skipped, never blocked.
- `Counters`: thread-safe monotonically increasing counters with delta snapshots for vLLM stats.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
L = TypeVar("L")

COUNTER_NAMES = (
    "lookups",  # identifiers resolved against the cache
    "hits",  # resolved as present and verified
    "misses",  # resolved as absent (or failed): the item is encoded locally or the request fails
    "lookup_errors",  # resolutions that failed (server down, timeout)
    "loads",  # embeddings placed into the worker's encoder cache from eccache
    "load_failures",  # loads that failed after scheduling (the request is failed cleanly)
    "checksum_failures",  # reads whose checksum did not match (entry dropped)
    "saves",  # embeddings published (stored)
    "saves_existing",  # saves answered "exists" / "in_progress": nothing moved
    "saves_skipped",  # saves dropped because the save queue was full
    "save_errors",  # publications that failed
    "unavailable_requests",  # requests failed because an item could neither be loaded nor encoded
)


class ResultCache(Generic[K, V]):
    """A bounded LRU map whose entries expire `ttl_s` after they were put."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries <= 0 or ttl_s <= 0:
            raise ValueError("max_entries and ttl_s must be positive")
        self._max = max_entries
        self._ttl = ttl_s
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: K, value: V) -> list[V]:
        """Stores `value`; returns the values pushed out (replaced, over the bound) so callers can clean up."""
        dropped: list[V] = []
        old = self._items.pop(key, None)
        if old is not None:
            dropped.append(old[1])
        self._items[key] = (self._clock() + self._ttl, value)
        while len(self._items) > self._max:
            dropped.append(self._items.popitem(last=False)[1][1])
        return dropped

    def get(self, key: K) -> V | None:
        """The live value for `key`, or None if absent or expired (an expired one stays for `expire`)."""
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            return None
        self._items.move_to_end(key)
        return item[1]

    def pop(self, key: K) -> V | None:
        item = self._items.pop(key, None)
        return None if item is None else item[1]

    def expire(self) -> list[V]:
        """Removes and returns every expired value."""
        now = self._clock()
        dead = [k for k, (deadline, _) in self._items.items() if deadline <= now]
        return [self._items.pop(k)[1] for k in dead]

    def clear(self) -> list[V]:
        values = [v for _, v in self._items.values()]
        self._items.clear()
        return values


class LeaseBook(Generic[L]):
    """Read leases held on behalf of requests: (request id, identifier) → lease, each released once."""

    def __init__(self) -> None:
        self._by_request: dict[str, dict[str, L]] = {}

    def add(self, request_id: str, identifier: str, lease: L) -> L | None:
        """Records a lease; returns a lease it replaced (to release), if the pair already held one."""
        held = self._by_request.setdefault(request_id, {})
        previous = held.get(identifier)
        held[identifier] = lease
        return previous if previous is not lease else None

    def holds(self, request_id: str, identifier: str) -> bool:
        return identifier in self._by_request.get(request_id, {})

    def take_request(self, request_id: str) -> list[L]:
        """Removes and returns every lease the request held."""
        return list(self._by_request.pop(request_id, {}).values())

    def take_item(self, request_id: str, identifier: str) -> L | None:
        held = self._by_request.get(request_id)
        if held is None:
            return None
        lease = held.pop(identifier, None)
        if not held:
            del self._by_request[request_id]
        return lease

    def requests_holding(self, identifiers: Iterable[str]) -> set[str]:
        wanted = set(identifiers)
        return {rid for rid, held in self._by_request.items() if wanted.intersection(held)}

    def take_all(self) -> list[L]:
        leases = [lease for held in self._by_request.values() for lease in held.values()]
        self._by_request.clear()
        return leases

    def __len__(self) -> int:
        return sum(len(held) for held in self._by_request.values())


class ByteBudget:
    """Bytes in flight against a fixed capacity; thread-safe; never waits."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def try_reserve(self, nbytes: int) -> bool:
        """Takes `nbytes` if they fit; False (nothing taken) otherwise."""
        with self._lock:
            if nbytes < 0 or self._used + nbytes > self.capacity:
                return False
            self._used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            if nbytes > self._used:
                raise ValueError(f"releasing {nbytes} bytes but only {self._used} are reserved")
            self._used -= nbytes


class Counters:
    """Named counters; `take_delta` returns what changed since its last call (for per-interval stats)."""

    def __init__(self, names: Iterable[str] = COUNTER_NAMES) -> None:
        self._values: dict[str, int] = dict.fromkeys(names, 0)
        self._reported: dict[str, int] = dict.fromkeys(self._values, 0)
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] += n

    def merge(self, delta: dict[str, int]) -> None:
        with self._lock:
            for name, n in delta.items():
                if name in self._values:
                    self._values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def take_delta(self) -> dict[str, int]:
        with self._lock:
            delta = {k: v - self._reported[k] for k, v in self._values.items() if v != self._reported[k]}
            self._reported = dict(self._values)
            return delta

    def __getitem__(self, name: str) -> int:
        return self._values[name]
