"""Least-loaded balancing per role (pure; single-threaded asyncio use, no locks).

Each role (encode, pd, prefill, decode) has a ``RolePool`` of ``Instance``s kept in a min-heap keyed on
active estimated tokens (ties: least recently picked first). ``acquire`` returns a ``Lease``: the tokens it
added are removed by ``Lease.release()``, which is idempotent, so callers release in ``finally`` blocks on
every outcome (success, error, timeout, cancellation, client disconnect) and the counters return to zero.

Health: an instance is ejected after ``eject_after`` consecutive failures (probe or request) and readmitted
after ``readmit_after`` consecutive successful probes. Ejected instances are never picked.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from proxy.errors import NoInstanceAvailable


class Role(enum.Enum):
    ENCODE = "encode"
    PD = "pd"
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(eq=False, slots=True)
class Instance:
    """One backend instance. Mutable counters; identity is the object (and its url within a pool)."""

    url: str
    role: Role
    active_tokens: int = 0
    active_requests: int = 0
    healthy: bool = True
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    removed: bool = False
    total_requests: int = 0
    version: int = 0


@dataclass(eq=False, slots=True)
class Lease:
    """Work placed on an instance; ``release`` removes it exactly once."""

    pool: RolePool
    instance: Instance
    tokens: int
    released: bool = False

    def release(self) -> bool:
        """Remove this lease's work from its instance; True the first time, False afterwards."""
        if self.released:
            return False
        self.released = True
        self.pool._on_release(self)
        return True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthPolicy:
    eject_after: int = 3
    readmit_after: int = 1

    def __post_init__(self) -> None:
        if self.eject_after < 1 or self.readmit_after < 1:
            raise ValueError("eject_after and readmit_after must be >= 1")


@dataclass(eq=False)
class RolePool:
    """Instances of one role with a lazily-updated min-heap on (active_tokens, tie)."""

    role: Role
    health: HealthPolicy = field(default_factory=HealthPolicy)
    _instances: dict[str, Instance] = field(default_factory=dict)
    _heap: list[tuple[int, int, int, Instance]] = field(default_factory=list)
    _tie: itertools.count = field(default_factory=itertools.count)
    live_leases: int = 0

    # ---- membership -------------------------------------------------------------------------------------
    def add(self, url: str) -> Instance:
        """Add an instance (idempotent by url); returns it."""
        url = url.rstrip("/")
        inst = self._instances.get(url)
        if inst is not None:
            return inst
        inst = Instance(url=url, role=self.role)
        self._instances[url] = inst
        self._push(inst)
        return inst

    def remove(self, url: str) -> bool:
        """Remove an instance; in-flight leases on it still release normally. True if it was present."""
        inst = self._instances.pop(url.rstrip("/"), None)
        if inst is None:
            return False
        inst.removed = True
        inst.version += 1
        return True

    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def get(self, url: str) -> Instance | None:
        return self._instances.get(url.rstrip("/"))

    def __len__(self) -> int:
        return len(self._instances)

    def healthy_count(self) -> int:
        return sum(1 for i in self._instances.values() if i.healthy)

    def total_active_tokens(self) -> int:
        return sum(i.active_tokens for i in self._instances.values())

    # ---- picking ----------------------------------------------------------------------------------------
    def acquire(self, tokens: int, exclude: Iterable[Instance] = ()) -> Lease:
        """Place ``tokens`` of work on the least-loaded healthy instance not in ``exclude``.

        Raises:
            NoInstanceAvailable: no healthy, non-excluded instance.
        """
        excluded = set(map(id, exclude))
        skipped: list[tuple[int, int, int, Instance]] = []
        chosen: Instance | None = None
        heap = self._heap
        while heap:
            entry = heapq.heappop(heap)
            _, _, version, inst = entry
            if inst.removed or version != inst.version:
                continue  # stale entry
            if not inst.healthy or id(inst) in excluded:
                skipped.append(entry)
                continue
            chosen = inst
            break
        for entry in skipped:
            heapq.heappush(heap, entry)
        if chosen is None:
            raise NoInstanceAvailable(f"no healthy {self.role.value} instance available")
        tokens = max(0, int(tokens))
        chosen.active_tokens += tokens
        chosen.active_requests += 1
        chosen.total_requests += 1
        self.live_leases += 1
        self._push(chosen)
        return Lease(pool=self, instance=chosen, tokens=tokens)

    def _on_release(self, lease: Lease) -> None:
        inst = lease.instance
        inst.active_tokens -= lease.tokens
        inst.active_requests -= 1
        self.live_leases -= 1
        if not inst.removed:
            self._push(inst)

    def _push(self, inst: Instance) -> None:
        inst.version += 1
        heapq.heappush(self._heap, (inst.active_tokens, next(self._tie), inst.version, inst))
        if len(self._heap) > 4 * len(self._instances) + 64:
            self._rebuild()

    def _rebuild(self) -> None:
        self._heap = []
        for inst in self._instances.values():
            inst.version += 1
            self._heap.append((inst.active_tokens, next(self._tie), inst.version, inst))
        heapq.heapify(self._heap)

    # ---- health -----------------------------------------------------------------------------------------
    def record_failure(self, inst: Instance) -> bool:
        """Count a failure; returns True if this ejected the instance."""
        inst.consecutive_successes = 0
        inst.consecutive_failures += 1
        if inst.healthy and inst.consecutive_failures >= self.health.eject_after:
            inst.healthy = False
            return True
        return False

    def record_success(self, inst: Instance) -> bool:
        """Count a success; returns True if this readmitted the instance."""
        inst.consecutive_failures = 0
        inst.consecutive_successes += 1
        if not inst.healthy and inst.consecutive_successes >= self.health.readmit_after:
            inst.healthy = True
            if not inst.removed:
                self._push(inst)
            return True
        return False


@dataclass(eq=False)
class Balancer:
    """All role pools of one proxy."""

    health: HealthPolicy = field(default_factory=HealthPolicy)
    pools: dict[Role, RolePool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role in Role:
            self.pools.setdefault(role, RolePool(role, self.health))

    def pool(self, role: Role) -> RolePool:
        return self.pools[role]

    def live_leases(self) -> int:
        return sum(p.live_leases for p in self.pools.values())

    def active_tokens(self) -> int:
        return sum(p.total_active_tokens() for p in self.pools.values())

    def active_requests(self) -> int:
        return sum(i.active_requests for p in self.pools.values() for i in p.instances())
