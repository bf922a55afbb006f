"""Property-based hostile input over every RPC's fields: each case gets a precise status (never INTERNAL
or UNKNOWN, never a traceback) and the server keeps serving. Runs against a real server and real Redis."""

from __future__ import annotations

from collections import Counter

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eccache import Client
from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from eccache.launch import ServerProcess
from tests.conftest import require

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PRECISE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
TRIED: Counter[str] = Counter()

names = st.one_of(st.text(max_size=40), st.sampled_from(["ns", "a|b", "{x}", "%", "ns/with:ok@chars"]),
                  st.text(min_size=500, max_size=700))
ids = st.lists(names, max_size=12)
dims = st.lists(st.integers(min_value=0, max_value=2**40), max_size=10)
dtypes = st.one_of(st.sampled_from(["bfloat16", "float32", "uint8", "complex64", "", "object"]), st.text(max_size=10))
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
lease_ids = st.one_of(st.text(max_size=70), st.sampled_from(["", "ab" * 16, "0" * 65]))

REQUESTS = {
    "Lookup": st.builds(pb.LookupRequest, namespace=names, identifiers=ids),
    "Reserve": st.builds(pb.ReserveRequest, namespace=names, identifier=names, shape=dims, dtype=dtypes,
                         nbytes=u64, metadata=st.binary(max_size=70_000), lease_ms=u32, ttl_s=u32),
    "Commit": st.builds(pb.CommitRequest, namespace=names, identifier=names, lease_id=lease_ids, checksum=u64),
    "Abort": st.builds(pb.AbortRequest, namespace=names, identifier=names, lease_id=lease_ids),
    "Acquire": st.builds(pb.AcquireRequest, namespace=names, identifiers=ids, lease_ms=u32),
    "Release": st.builds(pb.ReleaseRequest, leases=st.lists(st.builds(
        pb.LeaseRef, namespace=names, identifier=names, lease_id=lease_ids), max_size=5)),
    "Delete": st.builds(pb.DeleteRequest, namespace=names, identifiers=ids, if_checksum=u64),
    "SetAlias": st.builds(pb.SetAliasRequest, alias=names, namespace=names),
    "ResolveAlias": st.builds(pb.ResolveAliasRequest, alias=names),
}


@pytest.fixture(scope="module")
def server() -> str:
    from eccache.launch import RedisProcess, redis_server_binary

    require(redis_server_binary() is not None, "redis-server is not installed")
    with RedisProcess() as redis_proc, ServerProcess(pool_size="64MiB", redis_url=redis_proc.url,
                                                     transport="inline") as proc:
        yield proc.address


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_every_field_of_every_rpc_gets_a_precise_status(server: str, method: str) -> None:
    stub = getattr(pb_grpc.ECCacheStub(grpc.insecure_channel(server)), method)

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(REQUESTS[method])
    def case(request) -> None:
        TRIED[method] += 1
        try:
            stub(request, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert "Traceback" not in (exc.details() or "")
        assert code in PRECISE, (method, request, code)

    case()
    with Client(server) as client:  # still serving, still correct
        data = np.arange(32, dtype=np.float32)
        client.put("fuzz-check", method, data)
        assert client.get("fuzz-check", method).tobytes() == data.tobytes()


def test_streams_with_hostile_chunks_get_precise_statuses(server: str) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(server))
    cases = [
        [],  # empty stream
        [pb.WriteChunk(namespace="ns", identifier="x", lease_id="nothex!", data=b"a")],
        [pb.WriteChunk(namespace="ns", identifier="x", lease_id="ab" * 16, data=b"a" * 100)],
        [pb.WriteChunk(namespace="", identifier="", lease_id="", data=b"")],
    ]
    for chunks in cases:
        TRIED["WriteInline"] += 1
        with pytest.raises(grpc.RpcError) as info:
            stub.WriteInline(iter(chunks), timeout=10)
        assert info.value.code() in PRECISE, (chunks, info.value.code())
    for request in (pb.ReadRequest(), pb.ReadRequest(namespace="ns", identifier="x" * 600, lease_id="ab")):
        TRIED["ReadInline"] += 1
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ReadInline(request, timeout=10))
        assert info.value.code() in PRECISE


def test_report_cases_tried() -> None:
    print(f"\nhostile gRPC cases tried: {sum(TRIED.values())} {dict(TRIED)}")
    assert sum(TRIED.values()) >= 9 * 100
