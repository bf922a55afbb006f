"""eccache: a shared, content-hash-keyed cache of multimodal encoder outputs for disaggregated serving."""

from eccache.aio import AsyncClient
from eccache.client import Client
from eccache.errors import (
    CapacityExhausted,
    ECCacheError,
    InProgress,
    IntegrityError,
    InvalidArgument,
    LeaseExpired,
    NotFound,
    TransportError,
    Unauthenticated,
    Unavailable,
)
from eccache.types import Acquired, EntryInfo, PutOutcome

__all__ = [
    "Acquired",
    "AsyncClient",
    "CapacityExhausted",
    "Client",
    "ECCacheError",
    "EntryInfo",
    "InProgress",
    "IntegrityError",
    "InvalidArgument",
    "LeaseExpired",
    "NotFound",
    "PutOutcome",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
]
