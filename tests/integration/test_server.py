"""A real eccache server (subprocess) on a real redis-server, driven by the client over gRPC."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import ml_dtypes
import numpy as np
import pytest

from eccache import CapacityExhausted, Client, PutOutcome
from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration
MB = 1 << 20


def qwen25_embedding(seed: int = 0) -> np.ndarray:
    """A Qwen2.5-VL-7B 1024² image embedding: bf16 [1369, 3584], 9.8 MB."""
    raw = np.random.default_rng(seed).integers(0, 1 << 16, size=(1369, 3584), dtype=np.uint16)
    return raw.view(ml_dtypes.bfloat16)


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@pytest.mark.parametrize("transport", ["inline", "mooncake"])
def test_bf16_qwen25_embedding_round_trips_bit_exact(server_factory, transport: str) -> None:
    server = server_factory(transport="mooncake")
    src = qwen25_embedding()
    with Client(server.address, transport=transport) as client:
        assert client.put("qwen2.5-vl-7b", "img-a", src, metadata=b"\x91\x01") is PutOutcome.STORED
        got = client.get("qwen2.5-vl-7b", "img-a")
        assert got is not None and got.dtype == src.dtype and got.shape == (1369, 3584)
        assert got.tobytes() == src.tobytes()
        assert client.lookup_entries("qwen2.5-vl-7b", ["img-a"])[0].metadata == b"\x91\x01"
        assert client.transport.name == transport


def test_auto_transport_picks_mooncake_when_offered(mooncake_server: str, eccache_server: str) -> None:
    with Client(mooncake_server) as a, Client(eccache_server) as b:
        a.put("ns", "x", np.arange(10, dtype=np.float32))
        b.put("ns", "x", np.arange(10, dtype=np.float32))
        assert (a.transport.name, b.transport.name) == ("mooncake", "inline")


def test_torch_bfloat16_tensor_round_trips(mooncake_server: str) -> None:
    torch = pytest.importorskip("torch")
    src = torch.randn(64, 128).to(torch.bfloat16)
    with Client(mooncake_server) as client:
        client.put("ns", "t", src)
        assert torch.equal(client.get_tensor("ns", "t"), src)


def test_concurrent_writers_of_one_key_write_once(mooncake_server: str) -> None:
    src = np.random.default_rng(3).standard_normal((512, 1024)).astype(np.float32)
    barrier = threading.Barrier(8)
    outcomes: list[PutOutcome] = []

    def writer() -> None:
        with Client(mooncake_server) as client:
            barrier.wait()
            outcomes.append(client.put("ns", "cold", src))

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(outcomes)
    assert counts[PutOutcome.STORED] == 1
    assert counts[PutOutcome.EXISTS] + counts[PutOutcome.IN_PROGRESS] == 7
    with Client(mooncake_server) as client:
        assert client.get("ns", "cold").tobytes() == src.tobytes()
        assert client.stats()["entries"] == 1


WRITER_THAT_DIES = """
import sys, time
import grpc
from eccache._proto import eccache_pb2 as pb, eccache_pb2_grpc as pb_grpc
stub = pb_grpc.ECCacheStub(grpc.insecure_channel(sys.argv[1]))
r = stub.Reserve(pb.ReserveRequest(namespace="ns", identifier="orphan", shape=[1024, 1024], dtype="float32",
                                   nbytes=4 << 20, lease_ms=800))
print(pb.ReserveOutcome.Name(r.outcome), flush=True)
time.sleep(60)
"""


def test_writer_killed_between_reserve_and_commit_is_never_visible_and_slot_is_reclaimed(
        mooncake_server: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER_THAT_DIES, mooncake_server], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "RESERVE_OUTCOME_RESERVED"
    with Client(mooncake_server) as client:
        assert client.stats()["used_bytes"] == 4 * MB
        proc.kill()
        proc.wait()
        assert client.lookup("ns", ["orphan"]) == [False]
        assert client.get("ns", "orphan") is None
        # lease (0.8 s) expires, then housekeeping frees the slot
        assert wait_for(lambda: client.stats()["used_bytes"] == 0, timeout_s=8)
        assert client.put("ns", "orphan", np.zeros((1024, 1024), np.float32)) is PutOutcome.STORED


def test_eviction_is_lru_and_skips_leased_entries(server_factory) -> None:
    server = server_factory(transport="mooncake", pool_size="32MiB")
    block = np.ones((10 * MB,), dtype=np.uint8)
    with Client(server.address) as client:
        for name in ("a", "b", "c"):
            assert client.put("ns", name, block) is PutOutcome.STORED
        leased = client.acquire("ns", ["a"])  # a is the oldest but leased
        assert client.get("ns", "c") is not None  # c becomes the most recent
        assert client.put("ns", "d", block) is PutOutcome.STORED
        assert client.lookup("ns", ["a", "b", "c", "d"]) == [True, False, True, True]
        assert client.stats()["evictions"] == 1
        client.release(leased)
        assert client.put("ns", "e", block) is PutOutcome.STORED
        assert client.lookup("ns", ["a", "b", "c", "d", "e"]) == [False, False, True, True, True]


def test_full_pool_with_nothing_evictable_is_resource_exhausted(server_factory) -> None:
    server = server_factory(transport="mooncake", pool_size="24MiB")
    block = np.ones((10 * MB,), dtype=np.uint8)
    with Client(server.address) as client:
        client.put("ns", "a", block)
        client.put("ns", "b", block)
        leases = client.acquire("ns", ["a", "b"])
        with pytest.raises(CapacityExhausted, match="pool full"):
            client.put("ns", "c", block)
        assert client.lookup("ns", ["a", "b", "c"]) == [True, True, False]
        assert client.get("ns", "a").tobytes() == block.tobytes()  # nothing was overwritten
        client.release(leases)
        assert client.put("ns", "c", block) is PutOutcome.STORED


def test_corrupted_bytes_read_as_a_miss_and_the_entry_is_dropped(mooncake_server: str, needs_mooncake) -> None:
    from eccache.transport.mooncake import Engine

    src = np.arange(256 * 1024, dtype=np.float32)
    with Client(mooncake_server) as client:
        client.put("ns", "victim", src)
        acquired = client.acquire("ns", ["victim"])[0]
        client.release([acquired])
        # flip bytes in the server's pool with a one-sided write, as a faulty NIC or a bug would
        garbage = np.full(4096, 0xAB, dtype=np.uint8)
        engine = Engine()
        engine.register(int(garbage.ctypes.data), garbage.nbytes)
        engine.transfer(acquired.location.te_session, int(garbage.ctypes.data), acquired.location.address,
                        garbage.nbytes, write=True)
        assert client.get("ns", "victim") is None
        assert client.counters["checksum_failures"] == 1
        assert client.lookup("ns", ["victim"]) == [False]  # dropped: the next request recomputes
        assert client.put("ns", "victim", src) is PutOutcome.STORED
        assert client.get("ns", "victim").tobytes() == src.tobytes()


@pytest.mark.parametrize("transport", ["mooncake", "inline"])
def test_server_restart_turns_old_entries_into_misses(server_factory, redis_url: str, transport: str) -> None:
    import redis

    server = server_factory(transport=transport)
    src = np.arange(1000, dtype=np.float32)
    with Client(server.address) as client:
        client.put("ns", "before", src)
    server.restart(kill=True)  # SIGKILL, same port and node name
    with Client(server.address) as client:
        assert client.lookup("ns", ["before"]) == [False]
        assert client.get("ns", "before") is None
        # the old pool's index entries are purged, not left in Redis forever
        r = redis.Redis.from_url(redis_url)
        assert wait_for(lambda: r.keys("ecc:e:*") == [], timeout_s=5)
        assert client.put("ns", "before", src) is PutOutcome.STORED
        assert client.get("ns", "before").tobytes() == src.tobytes()


def test_client_reconnects_within_a_second_of_a_long_outage(server_factory) -> None:
    """gRPC's default reconnect backoff would keep this client failing (every read a miss) for ~6 s more."""
    server = server_factory(transport="inline")
    src = np.arange(1000, dtype=np.float32)
    with Client(server.address, timeout_s=1) as client:
        client.put("ns", "before", src)
        server.stop(kill=True)
        outage_end = time.monotonic() + 10
        while time.monotonic() < outage_end:  # reads during the outage grow the channel's backoff
            assert client.lookup("ns", ["before"]) == [False]
            time.sleep(0.2)
        errors_in_outage = client.counters["lookup_errors"]
        assert errors_in_outage > 10
        server.start()
        time.sleep(1.5)  # the capped backoff (1 s) has passed: the next read must reach the server
        assert client.put("ns", "after", src) is PutOutcome.STORED
        assert client.get("ns", "after").tobytes() == src.tobytes()
        assert client.counters["lookup_errors"] == errors_in_outage


def test_sigterm_shuts_down_cleanly_and_retires_the_pool(server_factory) -> None:
    a = server_factory(transport="mooncake")
    b = server_factory(transport="mooncake")
    with Client(a.address) as ca, Client(b.address) as cb:
        ca.put("ns", "on-a", np.ones(100, np.float32))
        assert cb.lookup("ns", ["on-a"]) == [True]
        assert a.stop(kill=False) == 0
        assert cb.lookup("ns", ["on-a"]) == [False]  # at once, not after a heartbeat timeout


@pytest.mark.parametrize("transport", ["mooncake", "inline"])
def test_two_servers_share_one_index(server_factory, transport: str) -> None:
    a = server_factory(transport="mooncake")
    b = server_factory(transport="mooncake")
    src = qwen25_embedding(5)
    with Client(a.address, transport=transport) as ca, Client(b.address, transport=transport) as cb:
        assert ca.put("ns", "shared", src) is PutOutcome.STORED
        assert cb.put("ns", "shared", src) is PutOutcome.EXISTS
        assert cb.get("ns", "shared").tobytes() == src.tobytes()  # bytes come from a's pool


def test_ttl_entries_expire(mooncake_server: str) -> None:
    with Client(mooncake_server) as client:
        client.put("ns", "short", np.ones(10, np.float32), ttl_s=1)
        assert client.lookup("ns", ["short"]) == [True]
        assert wait_for(lambda: client.lookup("ns", ["short"]) == [False], timeout_s=5)
        assert wait_for(lambda: client.stats()["used_bytes"] == 0, timeout_s=5)


def test_delete_removes_and_reclaims(mooncake_server: str) -> None:
    with Client(mooncake_server) as client:
        client.put("ns", "gone", np.ones(1000, np.float32))
        assert client.delete("ns", ["gone", "never"]) == 1
        assert client.lookup("ns", ["gone"]) == [False]
        assert wait_for(lambda: client.stats()["used_bytes"] == 0, timeout_s=6)


def test_aliases_resolve_and_unknown_is_none(eccache_server: str) -> None:
    with Client(eccache_server) as client:
        client.set_alias("tiny", "tiny@abc:float32:w128")
        assert client.resolve_alias("tiny") == "tiny@abc:float32:w128"
        assert client.resolve_alias("other") is None


def test_health_and_reflection_are_served(eccache_server: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(eccache_server)
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="eccache.v1.ECCache"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "eccache.v1.ECCache" in names


def test_client_reads_turn_a_dead_server_into_misses() -> None:
    from eccache.launch import free_port

    with Client(f"127.0.0.1:{free_port()}", timeout_s=1) as client:
        assert client.lookup("ns", ["a", "b"]) == [False, False]
        assert client.get("ns", "a") is None
        assert client.acquire("ns", ["a"]) == [None]
        assert client.counters["lookup_errors"] == 3


def test_stats_cli_prints_json(eccache_server: str) -> None:
    out = subprocess.run([sys.executable, "-m", "eccache.cli", "stats", "--server", eccache_server],
                         capture_output=True, text=True, check=True).stdout
    import json

    stats = json.loads(out)
    assert stats["node_address"] == eccache_server and stats["transports"] == ["inline"]


def test_prometheus_metrics_are_exposed(server_factory) -> None:
    import urllib.request

    from eccache.launch import free_port

    port = free_port()
    server = server_factory(transport="inline", extra=("--metrics-port", str(port)))
    with Client(server.address) as client:
        client.put("ns", "m", np.ones(10, np.float32))
        client.lookup("ns", ["m", "n"])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "eccache_lookups_total 2.0" in text
    assert "eccache_hits_total 1.0" in text
    assert 'eccache_rpc_seconds_count{code="OK",method="Reserve"} 1.0' in text
    assert "eccache_pool_bytes_used 4096.0" in text


def test_raw_stub_types_are_the_generated_ones(eccache_server: str) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(eccache_server))
    r = stub.Lookup(pb.LookupRequest(namespace="ns", identifiers=["a"]))
    assert r.entries[0].state == pb.ENTRY_STATE_MISSING and r.entries[0].identifier == "a"
