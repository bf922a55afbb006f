"""Builds, serves and stops a cache server: gRPC (+ health, reflection), metrics, housekeeping.

`serve(config)` blocks until SIGTERM/SIGINT, then stops accepting RPCs, drains in-flight calls for a
grace period, retires the pool in Redis (its entries read as MISSING at once) and returns.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from eccache.metrics import ServerMetrics
from eccache.server.config import ServerConfig
from eccache.server.interceptors import ServerInterceptor
from eccache.server.node import CacheNode
from eccache.server.servicer import ECCacheServicer

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ECCache"].full_name
MAX_MESSAGE_BYTES = 4 << 20


@dataclass
class RunningServer:
    server: grpc.Server
    node: CacheNode
    metrics: ServerMetrics
    health: health.HealthServicer
    address: str
    metrics_port: int | None

    def stop(self, grace_s: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.node.stop()
        self.metrics.stop()


def advertised_address(config: ServerConfig, port: int) -> str:
    """The address other clients use to reach this server's pool (inline reads go to the owner)."""
    if config.advertise_address:
        return config.advertise_address
    if config.host in ("0.0.0.0", "::", "[::]", ""):
        return f"{socket.gethostname()}:{port}"
    return f"{config.host}:{port}"


def build(config: ServerConfig) -> RunningServer:
    """Creates and starts the server (non-blocking). The bound port is in `.address`."""
    node = CacheNode(config)
    metrics = ServerMetrics(node)
    interceptor = ServerInterceptor(
        config.auth_token, lambda m, code, s: metrics.rpc_seconds.labels(m, code).observe(s))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="eccache-rpc"),
        interceptors=[interceptor],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_concurrent_streams", config.max_concurrent_streams),
                 ("grpc.so_reuseport", 0)])
    pb_grpc.add_ECCacheServicer_to_server(ECCacheServicer(node), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
    bind = f"{config.host}:{config.port}"
    if config.tls_cert:
        with open(config.tls_key, "rb") as k, open(config.tls_cert, "rb") as c:  # type: ignore[arg-type]
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(bind, creds)
    else:
        port = server.add_insecure_port(bind)
    if port == 0:
        raise OSError(f"cannot bind {bind}")
    address = f"{config.host}:{port}"
    node.start(advertised_address(config, port))
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = metrics.serve(config.host, config.metrics_port) if config.metrics_port is not None else None
    return RunningServer(server, node, metrics, health_servicer, address, metrics_port)


def serve(config: ServerConfig) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down cleanly."""
    running = build(config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    extra = f", metrics on {config.host}:{running.metrics_port}" if running.metrics_port else ""
    print(f"eccache listening on {running.address}", flush=True)
    log.info("pool %s: %d bytes, transports %s%s", running.node.pool_id, config.pool_nbytes,
             running.node.transports, extra)
    stop.wait()
    log.info("shutting down")
    running.stop()
