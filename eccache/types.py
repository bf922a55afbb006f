"""Values that cross module boundaries: frozen dataclasses and enums."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryState(enum.IntEnum):
    MISSING = 0
    PENDING = 1
    READY = 2


class ReserveOutcome(enum.Enum):
    RESERVED = "reserved"
    EXISTS = "exists"
    IN_PROGRESS = "in_progress"


class PutOutcome(str, enum.Enum):
    """What `Client.put` did. A str enum so callers can compare with plain strings."""

    STORED = "stored"
    EXISTS = "exists"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True, slots=True)
class Location:
    """Where an entry's bytes live: a slot in one server's pool."""

    pool_id: str
    node_address: str
    te_session: str
    base_address: int
    offset: int
    nbytes: int

    @property
    def address(self) -> int:
        return self.base_address + self.offset


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """Metadata of a READY entry as readers see it."""

    identifier: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    checksum: int
    metadata: bytes = b""
    hits: int = 0
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class Reservation:
    """Answer to Reserve: a write lease on a slot, or why there is none."""

    outcome: ReserveOutcome
    lease_id: str = ""
    location: Location | None = None
    lease_expires_ms: int = 0


@dataclass(frozen=True, slots=True)
class Acquired:
    """An entry under a read lease: eviction cannot remove it until release or expiry."""

    namespace: str
    info: EntryInfo
    lease_id: str
    location: Location
    lease_expires_ms: int = 0


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """What a writer declares at Reserve: validated before any state changes."""

    namespace: str
    identifier: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    metadata: bytes = b""
    ttl_s: int = 0
