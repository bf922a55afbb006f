"""Conversions between protobuf messages and eccache types, shared by the servicer and the clients."""

from __future__ import annotations

from eccache._proto import eccache_pb2 as pb
from eccache.types import Acquired, EntryInfo, EntryState, Location, ReserveOutcome

OUTCOME_TO_PB = {ReserveOutcome.RESERVED: pb.RESERVE_OUTCOME_RESERVED,
                 ReserveOutcome.EXISTS: pb.RESERVE_OUTCOME_EXISTS,
                 ReserveOutcome.IN_PROGRESS: pb.RESERVE_OUTCOME_IN_PROGRESS}
OUTCOME_FROM_PB = {v: k for k, v in OUTCOME_TO_PB.items()}


def info_to_pb(info: EntryInfo, state: EntryState = EntryState.READY) -> pb.EntryInfo:
    return pb.EntryInfo(identifier=info.identifier, state=int(state), shape=info.shape, dtype=info.dtype,
                        nbytes=info.nbytes, checksum=info.checksum, metadata=info.metadata, hits=info.hits,
                        created_ms=info.created_ms)


def missing_pb(identifier: str) -> pb.EntryInfo:
    return pb.EntryInfo(identifier=identifier, state=pb.ENTRY_STATE_MISSING)


def info_from_pb(msg: pb.EntryInfo) -> EntryInfo:
    return EntryInfo(identifier=msg.identifier, shape=tuple(msg.shape), dtype=msg.dtype, nbytes=msg.nbytes,
                     checksum=msg.checksum, metadata=msg.metadata, hits=msg.hits, created_ms=msg.created_ms)


def location_to_pb(loc: Location) -> pb.Location:
    return pb.Location(pool_id=loc.pool_id, node_address=loc.node_address, te_session=loc.te_session,
                       base_address=loc.base_address, offset=loc.offset, nbytes=loc.nbytes)


def location_from_pb(msg: pb.Location) -> Location:
    return Location(pool_id=msg.pool_id, node_address=msg.node_address, te_session=msg.te_session,
                    base_address=msg.base_address, offset=msg.offset, nbytes=msg.nbytes)


def acquired_from_pb(namespace: str, msg: pb.AcquiredEntry) -> Acquired | None:
    if msg.info.state != pb.ENTRY_STATE_READY:
        return None
    return Acquired(namespace=namespace, info=info_from_pb(msg.info), lease_id=msg.lease_id,
                    location=location_from_pb(msg.location), lease_expires_ms=msg.lease_expires_ms)


def ready_entries(response: pb.LookupResponse) -> list[EntryInfo | None]:
    """A Lookup answer as the clients return it: READY entries' metadata, None for everything else."""
    return [info_from_pb(e) if e.state == pb.ENTRY_STATE_READY else None for e in response.entries]
