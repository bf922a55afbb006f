"""Seeded hostile gRPC input for the chaos report (the tests use hypothesis; this needs no test deps).

Each case is a request to one RPC with fields drawn from values that break naive servers: empty and huge
strings, key-structural characters, non-ASCII, zero and enormous sizes, unknown dtypes, malformed leases.
A case is answered precisely when the status is OK or a specific client error, never INTERNAL/UNKNOWN.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import grpc

from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc

PRECISE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
_STRINGS = ["", "ns", "a" * 257, "x" * 600, "{tag}", "a|b", "%7B", "é", "with space", "tab\t", "ns/ok:1@v",
            "\x00", "../../etc", "💥" * 50]
_INTS = [0, 1, 2, 24, 4096, 2**31, 2**32 - 1, 2**40, 2**63, 2**64 - 1]
_DTYPES = ["bfloat16", "float32", "uint8", "complex64", "", "object", "float8_e4m3fn", "BF16"]


def _s(rng: random.Random) -> str:
    return rng.choice(_STRINGS) if rng.random() < 0.8 else "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(8))


def _i(rng: random.Random, bits: int = 64) -> int:
    return rng.choice([v for v in _INTS if v < 2**bits])


def _requests(rng: random.Random) -> dict[str, Callable[[], Any]]:
    return {
        "Lookup": lambda: pb.LookupRequest(namespace=_s(rng), identifiers=[_s(rng) for _ in range(rng.choice([0, 1, 5, 1100]))]),
        "Reserve": lambda: pb.ReserveRequest(
            namespace=_s(rng), identifier=_s(rng), shape=[_i(rng) for _ in range(rng.randrange(0, 10))],
            dtype=rng.choice(_DTYPES), nbytes=_i(rng), metadata=b"m" * rng.choice([0, 10, 70_000]),
            lease_ms=_i(rng, 32), ttl_s=_i(rng, 32)),
        "Commit": lambda: pb.CommitRequest(namespace=_s(rng), identifier=_s(rng), lease_id=_s(rng), checksum=_i(rng)),
        "Abort": lambda: pb.AbortRequest(namespace=_s(rng), identifier=_s(rng), lease_id=_s(rng)),
        "Acquire": lambda: pb.AcquireRequest(namespace=_s(rng), identifiers=[_s(rng)], lease_ms=_i(rng, 32)),
        "Release": lambda: pb.ReleaseRequest(leases=[pb.LeaseRef(namespace=_s(rng), identifier=_s(rng),
                                                                 lease_id=_s(rng))]),
        "Delete": lambda: pb.DeleteRequest(namespace=_s(rng), identifiers=[_s(rng)], if_checksum=_i(rng)),
        "SetAlias": lambda: pb.SetAliasRequest(alias=_s(rng), namespace=_s(rng)),
        "ResolveAlias": lambda: pb.ResolveAliasRequest(alias=_s(rng)),
    }


def hostile_grpc(address: str, n: int, seed: int = 0) -> tuple[int, int]:
    """Sends n hostile requests spread over every RPC; returns (tried, answered precisely)."""
    rng = random.Random(seed)
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(address))
    makers = _requests(rng)
    methods = sorted(makers)
    precise = 0
    for i in range(n):
        method = methods[i % len(methods)]
        try:
            getattr(stub, method)(makers[method](), timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
        precise += code in PRECISE
    return n, precise
