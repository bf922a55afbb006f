"""Prometheus metrics of a cache server, in a registry of its own (several servers can share a process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from eccache.server.node import CacheNode


class NodeCollector(Collector):
    """Reads the node's counters and pool usage at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, node: CacheNode) -> None:
        self._node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self._node.counters
        pool = self._node.pool
        used, free, largest = pool.usage()
        ready, pending = pool.counts()
        pc = pool.counters()
        for name, doc, value in (
            ("eccache_lookups", "Identifiers looked up", c.lookups),
            ("eccache_hits", "Lookups and acquires that found a READY entry", c.hits),
            ("eccache_misses", "Lookups and acquires that found nothing", c.misses),
            ("eccache_bytes_in", "Bytes reserved for writing", c.bytes_in),
            ("eccache_bytes_out", "Bytes handed out under read leases", c.bytes_out),
            ("eccache_evictions", "Entries evicted to make room", pc.evictions),
            ("eccache_expirations", "Entries removed after their TTL", pc.expirations),
            ("eccache_reclaimed_slots", "Slots freed because the index no longer pointed at them", pc.reclaimed),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, value in (
            ("eccache_pool_bytes_used", "Pool bytes in slots", used),
            ("eccache_pool_bytes_free", "Pool bytes free", free),
            ("eccache_pool_largest_free_bytes", "Largest free block", largest),
            ("eccache_entries_ready", "READY entries in this pool", ready),
            ("eccache_entries_pending", "PENDING entries in this pool", pending),
            ("eccache_read_leases", "Read leases granted and not released by this server", c.read_leases),
        ):
            yield GaugeMetricFamily(name, doc, value=value)


class ServerMetrics:
    def __init__(self, node: CacheNode) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        self.rpc_seconds = Histogram(
            "eccache_rpc_seconds", "RPC latency by method and status", ["method", "code"],
            registry=self.registry,
            buckets=(5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5))
        self._http = None

    def serve(self, host: str, port: int) -> int:
        """Starts the /metrics HTTP endpoint; returns its port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http = None
