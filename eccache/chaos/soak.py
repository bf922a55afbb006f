"""`eccache chaos`: a soak of N client processes against two servers sharing one real Redis, with faults.

Workers mix put/get/lookup/delete over entries of 64 KiB .. 67 MB and verify every byte they read
against the content derived from its identifier. Faults from `faults.py` are injected one after the
other while the load runs. At the end the soak settles (leases expire, housekeeping runs) and audits
each pool: bytes in slots must equal the bytes of the index entries placed in it (no leaked slot).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from eccache.bench.common import percentile
from eccache.chaos.faults import FAULTS, Cluster, FaultResult
from eccache.chaos.workload import NAMESPACE, Tally, content, pick_identifier, pick_op, size_of
from eccache.client import Client
from eccache.errors import ECCacheError
from eccache.launch import RedisProcess, ServerProcess

WRITE_LEASE_MS = 5000
READ_LEASE_MS = 5000


@dataclass(frozen=True, kw_only=True)
class SoakConfig:
    duration_s: float = 60.0
    clients: int = 4
    pool_size: str = "768MiB"
    faults: tuple[str, ...] = tuple(FAULTS)
    seed: int = 0
    transport: str | None = None
    hostile_cases: int = 600  # per surface (gRPC, proxy HTTP)
    proxy_faults: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {sorted(FAULTS)}")
        if self.duration_s <= 0 or self.clients <= 0:
            raise ValueError("duration and clients must be positive")


@dataclass
class PoolAudit:
    address: str
    used_bytes: int
    indexed_bytes: int
    slots: int
    indexed_entries: int

    @property
    def leaked_bytes(self) -> int:
        return self.used_bytes - self.indexed_bytes


@dataclass
class SoakReport:
    config: SoakConfig
    elapsed_s: float
    tally: Tally
    faults: list[FaultResult] = field(default_factory=list)
    audits: list[PoolAudit] = field(default_factory=list)
    serving_at_end: bool = False
    hostile: dict[str, tuple[int, int]] = field(default_factory=dict)  # surface -> (tried, precise)

    @property
    def passed(self) -> bool:
        return (self.tally.corrupted_reads == 0 and all(f.held for f in self.faults) and self.serving_at_end
                and all(a.leaked_bytes == 0 and a.slots == a.indexed_entries for a in self.audits)
                and all(tried == precise for tried, precise in self.hostile.values()))

    def as_dict(self) -> dict[str, Any]:
        t = self.tally
        return {
            "duration_s": round(self.elapsed_s, 1), "clients": self.config.clients, "ops": t.ops,
            "ops_per_s": round(t.ops / self.elapsed_s, 1), "verified_mb": round(t.verified_bytes / 1e6, 1),
            "latency_ms": {op: {"p50": round(1000 * percentile(s, 50), 2), "p99": round(1000 * percentile(s, 99), 2),
                                "n": len(s)} for op, s in sorted(t.latencies.items())},
            "outcomes": dict(sorted(t.outcomes.items())), "errors_by_status": t.errors(),
            "corrupted_reads": t.corrupted_reads,
            "faults": [asdict(f) for f in self.faults],
            "pools": [{**asdict(a), "leaked_bytes": a.leaked_bytes} for a in self.audits],
            "hostile_inputs": {k: {"tried": t, "precise": p} for k, (t, p) in self.hostile.items()},
            "serving_at_end": self.serving_at_end, "passed": self.passed,
        }


def _worker(index: int, addresses: list[str], config: SoakConfig, stop_at: float, queue: mp.Queue) -> None:
    rng = random.Random(config.seed * 7919 + index)
    clients = [Client(a, transport=config.transport, timeout_s=10) for a in addresses]
    tally = Tally()
    while time.time() < stop_at:
        op, identifier, client = pick_op(rng), pick_identifier(rng), rng.choice(clients)
        start = time.perf_counter()
        try:
            outcome = _do(op, identifier, client, rng, tally)
        except ECCacheError as exc:
            outcome = exc.grpc_code.name
        except Exception as exc:  # anything else is a defect: reported as such
            outcome = f"UNEXPECTED_{type(exc).__name__.upper()}"
        tally.latencies[op].append(time.perf_counter() - start)
        tally.outcomes[f"{op}:{outcome}"] += 1
    for client in clients:
        for name, n in client.counters.items():
            tally.outcomes[f"client:{name}"] += n
        client.close()
    queue.put({"latencies": dict(tally.latencies), "outcomes": dict(tally.outcomes),
               "corrupted_reads": tally.corrupted_reads, "verified_bytes": tally.verified_bytes})


def _do(op: str, identifier: str, client: Client, rng: random.Random, tally: Tally) -> str:
    if op == "put":
        return str(client.put(NAMESPACE, identifier, content(identifier)).value)
    if op == "get":
        got = client.get(NAMESPACE, identifier)
        if got is None:
            return "miss"
        if got.nbytes != size_of(identifier) or got.tobytes() != content(identifier).tobytes():
            tally.corrupted_reads += 1
            return "corrupted"
        tally.verified_bytes += got.nbytes
        return "hit"
    if op == "lookup":
        hits = client.lookup(NAMESPACE, [pick_identifier(rng) for _ in range(8)])
        return f"{sum(hits)}of8"
    return f"deleted{client.delete(NAMESPACE, [identifier])}"


def audit(redis_url: str, address: str) -> PoolAudit:
    """Bytes in the server's slots vs the index entries that point into its pool."""
    import redis

    with Client(address) as client:
        stats = client.stats()
    r = redis.Redis.from_url(redis_url)
    indexed_bytes = indexed = 0
    for key in r.scan_iter("ecc:e:*", count=500):
        pool, nbytes = r.hmget(key, "pool", "nb")
        if pool is not None and pool.decode() == stats["pool_id"]:
            indexed += 1
            indexed_bytes += max(4096, -(-int(nbytes) // 4096) * 4096)
    return PoolAudit(address, stats["used_bytes"], indexed_bytes, stats["entries"] + stats["pending"], indexed)


def run(config: SoakConfig) -> SoakReport:
    with RedisProcess() as redis_proc:
        servers = [ServerProcess(pool_size=config.pool_size, redis_url=redis_proc.url,
                                 extra=("--write-lease-ms", str(WRITE_LEASE_MS), "--read-lease-ms",
                                        str(READ_LEASE_MS), "--heartbeat-ms", "500")) for _ in range(2)]
        try:
            return _soak(config, Cluster(redis_proc, servers))
        finally:
            for server in servers:
                server.stop(kill=True)


def _soak(config: SoakConfig, cluster: Cluster) -> SoakReport:
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    start = time.time()
    stop_at = start + config.duration_s
    workers = [ctx.Process(target=_worker, args=(i, cluster.addresses, config, stop_at, queue), daemon=True)
               for i in range(config.clients)]
    for w in workers:
        w.start()
    report = SoakReport(config, 0.0, Tally())
    gap = config.duration_s / (len(config.faults) + 1)
    for i, name in enumerate(config.faults):
        time.sleep(max(0.0, start + gap * (i + 1) - time.time()))
        report.faults.append(FAULTS[name](cluster))
    for _ in workers:
        part = queue.get(timeout=config.duration_s + 300)
        tally = Tally(corrupted_reads=part["corrupted_reads"], verified_bytes=part["verified_bytes"])
        for op, samples in part["latencies"].items():
            tally.latencies[op].extend(samples)
        tally.outcomes.update(part["outcomes"])
        report.tally.merge(tally)
    for w in workers:
        w.join(30)
    report.elapsed_s = time.time() - start
    time.sleep((max(WRITE_LEASE_MS, READ_LEASE_MS) + 2500) / 1000)  # leases expire, housekeeping reclaims
    report.audits = [audit(cluster.redis.url, a) for a in cluster.addresses]
    if config.hostile_cases:
        from eccache.chaos.hostile import hostile_grpc

        report.hostile["grpc"] = hostile_grpc(cluster.addresses[0], config.hostile_cases, config.seed)
    report.serving_at_end = all(_final_round_trip(a) for a in cluster.addresses)
    return report


def run_proxy_side(config: SoakConfig, report: SoakReport) -> None:
    """The proxy's faults and hostile HTTP input, each on its own stack of subprocesses."""
    from eccache.chaos.proxy_faults import hostile_inputs, run_proxy_faults

    if config.proxy_faults:
        report.faults.extend(run_proxy_faults(10.0))
    if config.hostile_cases:
        report.hostile["proxy_http"] = hostile_inputs(config.hostile_cases)


def _final_round_trip(address: str) -> bool:
    identifier = "1m-final"
    with Client(address) as client:
        client.delete(NAMESPACE, [identifier])
        client.put(NAMESPACE, identifier, content(identifier))
        got = client.get(NAMESPACE, identifier)
        return got is not None and got.tobytes() == content(identifier).tobytes()


def table(d: dict[str, Any]) -> str:
    lines = [f"load held: {d['clients']} clients x {d['duration_s']} s against 2 servers + 1 Redis: "
             f"{d['ops']} ops ({d['ops_per_s']}/s), {d['verified_mb']} MB read and verified",
             f"{'op':<8} {'n':>7} {'p50 ms':>9} {'p99 ms':>9}"]
    for op, row in d["latency_ms"].items():
        lines.append(f"{op:<8} {row['n']:>7} {row['p50']:>9.2f} {row['p99']:>9.2f}")
    lines.append("faults survived:")
    for f in d["faults"]:
        lines.append(f"  [{'ok' if f['held'] else 'FAILED'}] {f['name']}: {f['detail']}")
    lines.append(f"errors by status (during faults): {d['errors_by_status'] or 'none'}")
    for surface, h in d["hostile_inputs"].items():
        lines.append(f"bad inputs tried ({surface}): {h['tried']}, answered with a precise status: {h['precise']}")
    lines.append(f"corrupted reads: {d['corrupted_reads']}")
    for p in d["pools"]:
        lines.append(f"pool {p['address']}: used {p['used_bytes']} B = indexed {p['indexed_bytes']} B, "
                     f"slots {p['slots']} / entries {p['indexed_entries']}, leaked {p['leaked_bytes']} B")
    lines.append(f"serving at end: {d['serving_at_end']}   RESULT: {'PASS' if d['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eccache chaos", description=__doc__)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (CI: about a minute)")
    p.add_argument("--clients", type=int, default=4, help="client processes")
    p.add_argument("--pool-size", default="768MiB", help="pool of each of the two servers")
    p.add_argument("--faults", nargs="*", default=list(FAULTS), help=f"subset of {', '.join(FAULTS)}")
    p.add_argument("--transport", choices=["mooncake", "inline"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hostile-cases", type=int, default=600, help="bad inputs per surface (gRPC, proxy HTTP)")
    p.add_argument("--no-proxy", action="store_true", help="skip the proxy's faults and hostile HTTP input")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    config = SoakConfig(duration_s=args.duration, clients=args.clients, pool_size=args.pool_size,
                        faults=tuple(args.faults), seed=args.seed, transport=args.transport,
                        hostile_cases=args.hostile_cases, proxy_faults=not args.no_proxy)
    report = run(config)
    if not args.no_proxy:
        run_proxy_side(config, report)
    d = report.as_dict()
    print(json.dumps(d) if args.json else table(d), flush=True)
    return 0 if report.passed else 1
