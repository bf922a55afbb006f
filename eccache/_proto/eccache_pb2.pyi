from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_STATE_MISSING: _ClassVar[EntryState]
    ENTRY_STATE_PENDING: _ClassVar[EntryState]
    ENTRY_STATE_READY: _ClassVar[EntryState]

class ReserveOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESERVE_OUTCOME_UNSPECIFIED: _ClassVar[ReserveOutcome]
    RESERVE_OUTCOME_RESERVED: _ClassVar[ReserveOutcome]
    RESERVE_OUTCOME_EXISTS: _ClassVar[ReserveOutcome]
    RESERVE_OUTCOME_IN_PROGRESS: _ClassVar[ReserveOutcome]
ENTRY_STATE_MISSING: EntryState
ENTRY_STATE_PENDING: EntryState
ENTRY_STATE_READY: EntryState
RESERVE_OUTCOME_UNSPECIFIED: ReserveOutcome
RESERVE_OUTCOME_RESERVED: ReserveOutcome
RESERVE_OUTCOME_EXISTS: ReserveOutcome
RESERVE_OUTCOME_IN_PROGRESS: ReserveOutcome

class Location(_message.Message):
    __slots__ = ("pool_id", "node_address", "te_session", "base_address", "offset", "nbytes")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TE_SESSION_FIELD_NUMBER: _ClassVar[int]
    BASE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    node_address: str
    te_session: str
    base_address: int
    offset: int
    nbytes: int
    def __init__(self, pool_id: _Optional[str] = ..., node_address: _Optional[str] = ..., te_session: _Optional[str] = ..., base_address: _Optional[int] = ..., offset: _Optional[int] = ..., nbytes: _Optional[int] = ...) -> None: ...

class EntryInfo(_message.Message):
    __slots__ = ("identifier", "state", "shape", "dtype", "nbytes", "checksum", "metadata", "hits", "created_ms")
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    identifier: str
    state: EntryState
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    nbytes: int
    checksum: int
    metadata: bytes
    hits: int
    created_ms: int
    def __init__(self, identifier: _Optional[str] = ..., state: _Optional[_Union[EntryState, str]] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., nbytes: _Optional[int] = ..., checksum: _Optional[int] = ..., metadata: _Optional[bytes] = ..., hits: _Optional[int] = ..., created_ms: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("namespace", "identifiers")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifiers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., identifiers: _Optional[_Iterable[str]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[EntryInfo]
    def __init__(self, entries: _Optional[_Iterable[_Union[EntryInfo, _Mapping]]] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("namespace", "identifier", "shape", "dtype", "nbytes", "metadata", "lease_ms", "ttl_s")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    nbytes: int
    metadata: bytes
    lease_ms: int
    ttl_s: int
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., nbytes: _Optional[int] = ..., metadata: _Optional[bytes] = ..., lease_ms: _Optional[int] = ..., ttl_s: _Optional[int] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("outcome", "lease_id", "location", "lease_expires_ms")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    outcome: ReserveOutcome
    lease_id: str
    location: Location
    lease_expires_ms: int
    def __init__(self, outcome: _Optional[_Union[ReserveOutcome, str]] = ..., lease_id: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., lease_expires_ms: _Optional[int] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("namespace", "identifier", "lease_id", "checksum")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    lease_id: str
    checksum: int
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., lease_id: _Optional[str] = ..., checksum: _Optional[int] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("namespace", "identifier", "lease_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    lease_id: str
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AcquireRequest(_message.Message):
    __slots__ = ("namespace", "identifiers", "lease_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifiers: _containers.RepeatedScalarFieldContainer[str]
    lease_ms: int
    def __init__(self, namespace: _Optional[str] = ..., identifiers: _Optional[_Iterable[str]] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class AcquiredEntry(_message.Message):
    __slots__ = ("info", "lease_id", "location", "lease_expires_ms")
    INFO_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    info: EntryInfo
    lease_id: str
    location: Location
    lease_expires_ms: int
    def __init__(self, info: _Optional[_Union[EntryInfo, _Mapping]] = ..., lease_id: _Optional[str] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., lease_expires_ms: _Optional[int] = ...) -> None: ...

class AcquireResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AcquiredEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AcquiredEntry, _Mapping]]] = ...) -> None: ...

class LeaseRef(_message.Message):
    __slots__ = ("namespace", "identifier", "lease_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    lease_id: str
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseRef]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseRef, _Mapping]]] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: int
    def __init__(self, released: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("namespace", "identifiers", "if_checksum")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    IF_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifiers: _containers.RepeatedScalarFieldContainer[str]
    if_checksum: int
    def __init__(self, namespace: _Optional[str] = ..., identifiers: _Optional[_Iterable[str]] = ..., if_checksum: _Optional[int] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("pool_id", "node_address", "te_session", "transports", "pool_bytes", "used_bytes", "free_bytes", "largest_free_bytes", "entries", "pending", "read_leases", "evictions", "expirations", "lookups", "hits", "misses", "bytes_in", "bytes_out")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TE_SESSION_FIELD_NUMBER: _ClassVar[int]
    TRANSPORTS_FIELD_NUMBER: _ClassVar[int]
    POOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    READ_LEASES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRATIONS_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    BYTES_IN_FIELD_NUMBER: _ClassVar[int]
    BYTES_OUT_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    node_address: str
    te_session: str
    transports: _containers.RepeatedScalarFieldContainer[str]
    pool_bytes: int
    used_bytes: int
    free_bytes: int
    largest_free_bytes: int
    entries: int
    pending: int
    read_leases: int
    evictions: int
    expirations: int
    lookups: int
    hits: int
    misses: int
    bytes_in: int
    bytes_out: int
    def __init__(self, pool_id: _Optional[str] = ..., node_address: _Optional[str] = ..., te_session: _Optional[str] = ..., transports: _Optional[_Iterable[str]] = ..., pool_bytes: _Optional[int] = ..., used_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ..., largest_free_bytes: _Optional[int] = ..., entries: _Optional[int] = ..., pending: _Optional[int] = ..., read_leases: _Optional[int] = ..., evictions: _Optional[int] = ..., expirations: _Optional[int] = ..., lookups: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., bytes_in: _Optional[int] = ..., bytes_out: _Optional[int] = ...) -> None: ...

class WriteChunk(_message.Message):
    __slots__ = ("namespace", "identifier", "lease_id", "data")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    lease_id: str
    data: bytes
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., lease_id: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class WriteResult(_message.Message):
    __slots__ = ("nbytes",)
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    nbytes: int
    def __init__(self, nbytes: _Optional[int] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("namespace", "identifier", "lease_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    identifier: str
    lease_id: str
    def __init__(self, namespace: _Optional[str] = ..., identifier: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class ReadChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("alias", "namespace")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    alias: str
    namespace: str
    def __init__(self, alias: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveAliasRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    def __init__(self, alias: _Optional[str] = ...) -> None: ...

class ResolveAliasResponse(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...
