"""Prometheus metrics of one proxy (own registry, so several proxies can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from proxy.balancer import Balancer


@dataclass(eq=False)
class ProxyMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("eccache_proxy_requests", "Client requests", ["route", "path", "status"],
                                registry=r)
        self.latency = Histogram("eccache_proxy_request_seconds", "Client request latency to last byte",
                                 ["route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                          10, 30, 60))
        self.items = Counter("eccache_proxy_media_items", "Media items by outcome",
                             ["outcome"], registry=r)  # warm, cold, encoded, encode_failed, joined, unpredictable
        self.encoder_calls = Counter("eccache_proxy_encoder_calls", "Encoder requests", ["result"], registry=r)
        self.retries = Counter("eccache_proxy_retries", "Retries on another instance", ["role"], registry=r)
        self.upstream_errors = Counter("eccache_proxy_upstream_errors", "Backend failures", ["role"],
                                       registry=r)
        self.metadata_fallbacks = Counter("eccache_proxy_metadata_fallbacks",
                                          "Metadata-only PD requests resent with media", registry=r)
        self.namespace_unresolved = Counter("eccache_proxy_namespace_unresolved",
                                            "Requests whose model had no eccache namespace", registry=r)
        self.lookup_seconds = Histogram("eccache_proxy_lookup_seconds", "eccache lookup latency", registry=r)
        self.midstream_failures = Counter("eccache_proxy_midstream_failures",
                                          "Streams that failed after the first byte", registry=r)
        self.in_flight = Gauge("eccache_proxy_in_flight_requests", "Admitted client requests in flight",
                               registry=r)
        self.overloaded = Counter("eccache_proxy_overloaded", "Requests refused by --max-concurrent (503)",
                                  registry=r)
        self.ejections = Counter("eccache_proxy_ejections", "Instances ejected", ["role"], registry=r)
        self.readmissions = Counter("eccache_proxy_readmissions", "Instances readmitted", ["role"], registry=r)
        self.active_tokens = Gauge("eccache_proxy_active_tokens", "Active estimated tokens",
                                   ["role", "instance"], registry=r)
        self.active_requests = Gauge("eccache_proxy_active_requests", "Active requests",
                                     ["role", "instance"], registry=r)
        self.healthy = Gauge("eccache_proxy_instance_healthy", "1 if the instance is in rotation",
                             ["role", "instance"], registry=r)

    def render(self, balancer: Balancer) -> bytes:
        """Refresh per-instance gauges and render the text exposition format."""
        for gauge in (self.active_tokens, self.active_requests, self.healthy):
            gauge.clear()
        for role, pool in balancer.pools.items():
            for inst in pool.instances():
                self.active_tokens.labels(role.value, inst.url).set(inst.active_tokens)
                self.active_requests.labels(role.value, inst.url).set(inst.active_requests)
                self.healthy.labels(role.value, inst.url).set(1 if inst.healthy else 0)
        return generate_latest(self.registry)
