"""Faults injected during a soak, each with the property that must hold afterwards.

Every fault runs in the orchestrator process while workers keep the load on; `inject` returns a
`FaultResult` whose `held` says whether the fault's own promise was kept (the soak-wide promises —
no corrupted read, no leaked slot, still serving — are checked by the soak itself).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from eccache.chaos.workload import NAMESPACE, content
from eccache.client import Client
from eccache.errors import ECCacheError
from eccache.launch import RedisProcess, ServerProcess


@dataclass
class Cluster:
    """What faults act on: one Redis, two servers sharing it."""

    redis: RedisProcess
    servers: list[ServerProcess]

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.servers]


@dataclass(frozen=True)
class FaultResult:
    name: str
    held: bool
    detail: str


def _serving(address: str, identifier: str, timeout_s: float = 15.0) -> bool:
    """A put and a verified get through address succeed within timeout_s (retrying while it recovers)."""
    deadline = time.monotonic() + timeout_s
    data = content(identifier, 1 << 16)
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout_s=2) as client:
                client.put(NAMESPACE, identifier, data)
                got = client.get(NAMESPACE, identifier)
                if got is not None and got.tobytes() == data.tobytes():
                    return True
        except ECCacheError:
            pass
        time.sleep(0.3)
    return False


_CHILD = r"""
import sys, time, os, signal
import grpc
from eccache._proto import eccache_pb2 as pb, eccache_pb2_grpc as pb_grpc
address, mode, tag = sys.argv[1], sys.argv[2], sys.argv[3]
stub = pb_grpc.ECCacheStub(grpc.insecure_channel(address))
if mode == "writer":
    for i in range(3):
        r = stub.Reserve(pb.ReserveRequest(namespace="chaos", identifier=f"{tag}-{i}", shape=[1 << 20],
                                           dtype="uint8", nbytes=1 << 20, lease_ms=1000))
    print("ready", flush=True)
elif mode == "reader":
    ids = [f"9m8-{i}" for i in range(16)] + [f"1m-{i}" for i in range(16)]
    r = stub.Acquire(pb.AcquireRequest(namespace="chaos", identifiers=ids, lease_ms=3000))
    held = [[e.info.identifier, e.lease_id] for e in r.entries if e.info.state == pb.ENTRY_STATE_READY]
    import json
    print("ready", json.dumps(held), flush=True)
elif mode == "paused-writer":
    from eccache.client import Client, checksum
    import numpy as np
    data = np.full(1 << 16, 7, dtype=np.uint8)
    client = Client(address)
    r = stub.Reserve(pb.ReserveRequest(namespace="chaos", identifier=tag, shape=[1 << 16], dtype="uint8",
                                       nbytes=1 << 16, lease_ms=500))
    from eccache.wire import location_from_pb
    client.transport.write("chaos", tag, r.lease_id, location_from_pb(r.location), memoryview(data))
    print("ready", flush=True)
    sys.stdin.readline()  # the orchestrator stops us here, past our lease, then lets us go on
    try:
        stub.Commit(pb.CommitRequest(namespace="chaos", identifier=tag, lease_id=r.lease_id,
                                     checksum=checksum(data)))
        print("COMMITTED", flush=True)
    except grpc.RpcError as e:
        print(e.code().name, flush=True)
time.sleep(600)
"""


def _child(address: str, mode: str, tag: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, address, mode, tag], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def dead_writer(c: Cluster) -> FaultResult:
    """A writer SIGKILLed between Reserve and Commit: its keys never become visible."""
    tag = f"dw{int(time.time() * 1000)}"
    proc, line = _child(c.addresses[0], "writer", tag)
    proc.kill()
    proc.wait()
    time.sleep(1.5)  # past its lease
    with Client(c.addresses[1]) as client:
        visible = client.lookup(NAMESPACE, [f"{tag}-{i}" for i in range(3)])
        fresh = client.put(NAMESPACE, f"{tag}-0", content("64k-0", 1 << 20).copy())
    held = line == "ready" and not any(visible) and fresh == "stored"
    return FaultResult("writer SIGKILLed between reserve and commit", held,
                       f"visible after kill: {sum(visible)}, key writable again: {fresh}")


def dead_reader(c: Cluster) -> FaultResult:
    """A reader SIGKILLed while holding read leases: its leases expire and stop pinning memory."""
    import json

    proc, line = _child(c.addresses[0], "reader", "r")
    proc.kill()
    proc.wait()
    leases = json.loads(line.split(" ", 1)[1]) if line.startswith("ready") else []
    time.sleep(3.5)  # past its 3 s leases
    live = _live_leases(c.redis.url, leases)
    return FaultResult("reader SIGKILLed while holding leases", line.startswith("ready") and live == 0,
                       f"{len(leases)} entries leased, of its leases still live after expiry: {live}")


def _live_leases(redis_url: str, leases: list[list[str]]) -> int:
    """How many of these (identifier, lease id) read leases still pin their entry."""
    import redis

    from eccache.keys import EntryKey

    r = redis.Redis.from_url(redis_url)
    seconds, micros = r.time()
    now_ms = seconds * 1000 + micros // 1000
    scores = [r.zscore(EntryKey(NAMESPACE, i).leases, lease) for i, lease in leases]
    return sum(1 for s in scores if s is not None and s > now_ms)


def server_kill(c: Cluster) -> FaultResult:
    """An eccache server SIGKILLed mid-transfer and restarted: its entries become misses; the other serves."""
    victim = c.servers[1]
    big = f"67m-srvkill{int(time.time() * 1000)}"  # not in the workers' key space
    with Client(victim.address) as client:
        client.put(NAMESPACE, big, content(big))
    reader = Client(c.addresses[0])  # reads the victim's pool through Mooncake while it dies
    got: list[object] = []
    thread = threading.Thread(target=lambda: got.extend(reader.get(NAMESPACE, big) for _ in range(5)))
    thread.start()
    time.sleep(0.05)
    victim.stop(kill=True)
    other_ok = _serving(c.addresses[0], "64k-srvkill")
    thread.join(60)
    reader.close()
    wrong = sum(1 for g in got if g is not None and g.tobytes() != content(big).tobytes())  # type: ignore[union-attr]
    victim.start()
    back = _serving(victim.address, "64k-srvkill2")
    with Client(victim.address) as client:
        stale = client.lookup(NAMESPACE, [big])[0] and client.lookup_entries(NAMESPACE, [big])[0] is not None
    held = other_ok and back and wrong == 0 and not thread.is_alive()
    return FaultResult("eccache server SIGKILLed mid-transfer and restarted", held,
                       f"other server serving: {other_ok}, reads during kill: {len(got)} (wrong {wrong}), "
                       f"restarted serving: {back}, old entry still listed: {stale}")


def redis_restart(c: Cluster) -> FaultResult:
    """Redis SIGKILLed and restarted empty: servers reconnect and serve; the lost index is an empty one."""
    c.redis.restart()
    ok = all(_serving(a, f"64k-rr{i}") for i, a in enumerate(c.addresses))
    return FaultResult("redis restarted (index lost)", ok, f"both servers serving again: {ok}")


def redis_flush(c: Cluster) -> FaultResult:
    import redis

    redis.Redis.from_url(c.redis.url).flushall()
    ok = all(_serving(a, f"64k-rf{i}") for i, a in enumerate(c.addresses))
    return FaultResult("redis flushed", ok, f"both servers serving again: {ok}")


def redis_pause(c: Cluster, pause_s: float = 4.0) -> FaultResult:
    """Redis unreachable for a while (SIGSTOP): clear UNAVAILABLE, reads miss fast, recovery without restart."""
    assert c.redis.proc is not None
    c.redis.proc.send_signal(signal.SIGSTOP)
    codes: list[str] = []
    try:
        with Client(c.addresses[0], timeout_s=10) as client:
            start = time.monotonic()
            try:
                client.put(NAMESPACE, "64k-pause", content("64k-pause", 1 << 16))
                codes.append("stored")
            except ECCacheError as exc:
                codes.append(exc.grpc_code.name)
            put_s = time.monotonic() - start
            missed = client.lookup(NAMESPACE, ["64k-0"]) == [False]
    finally:
        time.sleep(max(0.0, pause_s - (time.monotonic() - start)))
        c.redis.proc.send_signal(signal.SIGCONT)
    back = _serving(c.addresses[0], "64k-pause2")
    held = codes == ["UNAVAILABLE"] and put_s < 5 and missed and back
    return FaultResult("redis unreachable for a while", held,
                       f"put answered {codes} in {put_s:.1f}s, lookup missed: {missed}, recovered: {back}")


def paused_writer(c: Cluster) -> FaultResult:
    """A writer paused past its lease cannot commit (leases run on Redis time, not the writer's clock)."""
    tag = f"64k-pw{int(time.time() * 1000)}"
    proc, line = _child(c.addresses[0], "paused-writer", tag)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(1.0)  # lease was 500 ms
    proc.send_signal(signal.SIGCONT)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    answer = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    with Client(c.addresses[1]) as client:
        visible = client.lookup(NAMESPACE, [tag])[0]
    held = line == "ready" and answer == "FAILED_PRECONDITION" and not visible
    return FaultResult("paused writer past its lease cannot commit", held,
                       f"commit answered {answer}, entry visible: {visible}")


def pool_pressure(c: Cluster) -> FaultResult:
    """A full pool under write pressure: RESOURCE_EXHAUSTED or eviction, never a hang."""
    outcomes: list[str] = []
    start = time.monotonic()
    with Client(c.addresses[0], timeout_s=30) as client:
        for i in range(12):
            identifier = f"67m-pp{i}"
            try:
                outcomes.append(str(client.put(NAMESPACE, identifier, content(identifier, 67_000_000))))
            except ECCacheError as exc:
                outcomes.append(exc.grpc_code.name)
    elapsed = time.monotonic() - start
    allowed = {"PutOutcome.STORED", "PutOutcome.EXISTS", "PutOutcome.IN_PROGRESS", "RESOURCE_EXHAUSTED"}
    held = set(outcomes) <= allowed and elapsed < 60
    return FaultResult("full pool under write pressure", held,
                       f"{len(outcomes)} x 67 MB puts in {elapsed:.1f}s: {sorted(set(outcomes))}")


FAULTS: dict[str, Callable[[Cluster], FaultResult]] = {
    "dead-writer": dead_writer, "dead-reader": dead_reader, "paused-writer": paused_writer,
    "server-kill": server_kill, "redis-pause": redis_pause, "redis-restart": redis_restart,
    "redis-flush": redis_flush, "pool-pressure": pool_pressure,
}
