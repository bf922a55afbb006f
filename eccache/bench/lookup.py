"""`eccache bench lookup`: Lookup latency of 1 and 64 ids vs redis-py on the same Redis, same run.

The baseline is what any Lookup must at least cost: a redis-py pipeline of the same number of EXISTS
on the same Redis. A bare gRPC health check against the same server shows the floor of any unary RPC from
Python on the machine. At several client concurrencies (threads), ops/s is reported too.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import numpy as np
import redis

from eccache.bench.common import add_common_flags, emit, percentile, redis_for_bench, server_for_bench, timed
from eccache.client import Client
from eccache.keys import EntryKey

NAMESPACE = "bench-lookup"


def _populate(address: str, ids: list[str]) -> None:
    with Client(address, transport="inline") as client:
        for identifier in ids[::2]:  # half warm, half cold: a realistic mix
            client.put(NAMESPACE, identifier, np.zeros(16, np.float32))


def _latencies(fn, repeat: int) -> dict[str, float]:
    samples = timed(fn, repeat, warmup=20)
    return {"p50_us": percentile(samples, 50) * 1e6, "p99_us": percentile(samples, 99) * 1e6}


def _throughput(make_call, clients: int, duration_s: float) -> float:
    """ops/s with `clients` threads each calling its own fn for duration_s."""
    counts = [0] * clients
    stop = threading.Event()

    def worker(i: int) -> None:
        call = make_call()
        while not stop.is_set():
            call()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(duration_s)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / duration_s


def run(redis_url: str | None, repeat: int, concurrency: list[int], duration_s: float) -> dict[str, Any]:
    with redis_for_bench(redis_url) as url, server_for_bench(url, "64MiB", transport="inline") as address:
        if url is None:
            raise SystemExit("bench lookup needs a Redis: install redis-server or pass --redis-url")
        ids = [f"{i:064x}" for i in range(64)]
        _populate(address, ids)
        r = redis.Redis.from_url(url)
        keys = [EntryKey(NAMESPACE, i).entry for i in ids]

        def redis_pipeline(n: int):
            def call() -> None:
                pipe = r.pipeline(transaction=False)
                for key in keys[:n]:
                    pipe.exists(key)
                pipe.execute()
            return call

        result: dict[str, Any] = {}
        with Client(address) as client:
            for n in (1, 64):
                ours = _latencies(lambda n=n: client.lookup(NAMESPACE, ids[:n]), repeat)
                base = _latencies(redis_pipeline(n), repeat)
                result[f"lookup{n}_p50_us"], result[f"lookup{n}_p99_us"] = ours["p50_us"], ours["p99_us"]
                key = "redis_exists1" if n == 1 else "redis_pipeline64"
                result[f"{key}_p50_us"], result[f"{key}_p99_us"] = base["p50_us"], base["p99_us"]
            # the floor of any unary RPC from Python on this machine: the bare gRPC health check
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
            bare = _latencies(lambda: health.Check(health_pb2.HealthCheckRequest()), repeat)
            result["grpc_health_p50_us"], result["grpc_health_p99_us"] = bare["p50_us"], bare["p99_us"]
        result["ratio_lookup64_vs_pipeline_p50"] = result["lookup64_p50_us"] / result["redis_pipeline64_p50_us"]
        result["ratio_lookup1_vs_exists_p50"] = result["lookup1_p50_us"] / result["redis_exists1_p50_us"]
        result["concurrency"] = {}
        for clients in concurrency:
            def ours_call(n: int = 64):
                c = Client(address)
                return lambda: c.lookup(NAMESPACE, ids[:n])
            result["concurrency"][str(clients)] = {
                "lookup64_ops": _throughput(ours_call, clients, duration_s),
                "redis_pipeline64_ops": _throughput(lambda: redis_pipeline(64), clients, duration_s)}
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"{'call':<28} {'p50 us':>9} {'p99 us':>9}"]
    for name in ("lookup1", "redis_exists1", "lookup64", "redis_pipeline64", "grpc_health"):
        lines.append(f"{name:<28} {result[name + '_p50_us']:>9.0f} {result[name + '_p99_us']:>9.0f}")
    lines.append(f"Lookup(64) / redis pipeline(64) at p50: {result['ratio_lookup64_vs_pipeline_p50']:.2f}x "
                 f"(a bare gRPC health check costs {result['grpc_health_p50_us']:.0f} us here)")
    for clients, row in result["concurrency"].items():
        lines.append(f"{clients:>3} clients: Lookup(64) {row['lookup64_ops']:.0f} ops/s, "
                     f"pipeline(64) {row['redis_pipeline64_ops']:.0f} ops/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eccache bench lookup", description=__doc__)
    add_common_flags(p)
    p.add_argument("--repeat", type=int, default=500)
    p.add_argument("--concurrency", nargs="*", type=int, default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=2.0, help="seconds per concurrency level")
    p.add_argument("--plot", metavar="FILE.png", help="also write a chart")
    args = p.parse_args(argv)
    result = run(args.redis_url, args.repeat, args.concurrency, args.duration)
    if args.plot:
        from eccache.bench.plot import plot_pairs

        groups = {"1 id p50": (result["lookup1_p50_us"], result["redis_exists1_p50_us"]),
                  "64 ids p50": (result["lookup64_p50_us"], result["redis_pipeline64_p50_us"]),
                  "64 ids p99": (result["lookup64_p99_us"], result["redis_pipeline64_p99_us"])}
        result["plot"] = plot_pairs("eccache Lookup vs redis-py on the same Redis", "microseconds", groups,
                                    ("eccache Lookup (gRPC)", "redis-py EXISTS / pipeline"), args.plot)
    emit(result, args.json, table)
    return 0
