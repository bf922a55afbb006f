"""Request validation (pure): every field a caller sends is checked before any state changes.

Raises InvalidArgument with a message naming the field. Limits are module constants so the server,
the client and the tests agree on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from eccache.errors import InvalidArgument

MAX_NAMESPACE_LEN = 256
MAX_IDENTIFIER_LEN = 512
MAX_IDS_PER_BATCH = 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_DIMS = 8
MIN_LEASE_MS = 100
MAX_LEASE_MS = 10 * 60 * 1000
MAX_TTL_S = 30 * 24 * 3600
MAX_ALIAS_LEN = 256

DTYPE_ITEMSIZE: dict[str, int] = {
    "bfloat16": 2, "float16": 2, "float32": 4, "float64": 8,
    "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1,
}

_NAMESPACE_RE = re.compile(r"[A-Za-z0-9._:/@+=\-]+")
_IDENTIFIER_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no whitespace


def check_namespace(namespace: str) -> str:
    if not namespace:
        raise InvalidArgument("namespace is empty")
    if len(namespace) > MAX_NAMESPACE_LEN:
        raise InvalidArgument(f"namespace is longer than {MAX_NAMESPACE_LEN} characters")
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise InvalidArgument("namespace may contain only letters, digits and . _ : / @ + = -")
    return namespace


def check_identifier(identifier: str) -> str:
    if not identifier:
        raise InvalidArgument("identifier is empty")
    if len(identifier) > MAX_IDENTIFIER_LEN:
        raise InvalidArgument(f"identifier is longer than {MAX_IDENTIFIER_LEN} characters")
    if not _IDENTIFIER_RE.fullmatch(identifier):
        raise InvalidArgument("identifier must be printable ASCII without spaces")
    return identifier


def check_identifiers(identifiers: Sequence[str]) -> list[str]:
    if len(identifiers) > MAX_IDS_PER_BATCH:
        raise InvalidArgument(f"at most {MAX_IDS_PER_BATCH} identifiers per call, got {len(identifiers)}")
    return [check_identifier(i) for i in identifiers]


def check_alias(alias: str) -> str:
    if not alias or len(alias) > MAX_ALIAS_LEN or not _IDENTIFIER_RE.fullmatch(alias):
        raise InvalidArgument(f"alias must be 1..{MAX_ALIAS_LEN} printable ASCII characters without spaces")
    return alias


def check_layout(shape: Sequence[int], dtype: str, nbytes: int, pool_nbytes: int) -> tuple[int, ...]:
    """Checks that shape × itemsize = nbytes and that the entry can fit in a pool."""
    if dtype not in DTYPE_ITEMSIZE:
        raise InvalidArgument(f"dtype {dtype!r} is not one of {sorted(DTYPE_ITEMSIZE)}")
    if not 1 <= len(shape) <= MAX_DIMS:
        raise InvalidArgument(f"shape must have 1..{MAX_DIMS} dimensions, got {len(shape)}")
    if any(d <= 0 for d in shape):
        raise InvalidArgument(f"shape dimensions must be positive, got {list(shape)}")
    expected = math.prod(shape) * DTYPE_ITEMSIZE[dtype]
    if nbytes != expected:
        raise InvalidArgument(f"nbytes {nbytes} != prod(shape) {list(shape)} x itemsize of {dtype} = {expected}")
    if nbytes > pool_nbytes:
        raise InvalidArgument(f"nbytes {nbytes} exceeds the pool size {pool_nbytes}")
    return tuple(int(d) for d in shape)


def check_metadata(metadata: bytes) -> bytes:
    if len(metadata) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return metadata


def check_lease_ms(lease_ms: int, default_ms: int) -> int:
    """0 means the server default; otherwise MIN_LEASE_MS..MAX_LEASE_MS."""
    if lease_ms == 0:
        return default_ms
    if not MIN_LEASE_MS <= lease_ms <= MAX_LEASE_MS:
        raise InvalidArgument(f"lease_ms must be 0 or {MIN_LEASE_MS}..{MAX_LEASE_MS}, got {lease_ms}")
    return lease_ms


def check_ttl_s(ttl_s: int) -> int:
    if not 0 <= ttl_s <= MAX_TTL_S:
        raise InvalidArgument(f"ttl_s must be 0..{MAX_TTL_S}, got {ttl_s}")
    return ttl_s


def check_lease_id(lease_id: str) -> str:
    if not lease_id or len(lease_id) > 64 or not lease_id.isalnum():
        raise InvalidArgument("lease_id is missing or malformed")
    return lease_id
