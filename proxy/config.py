"""Proxy configuration: keyword-only dataclasses checked in ``__post_init__``; ``proxy.cli`` fills them."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.balancer import HealthPolicy
from proxy.media import MediaPolicy
from proxy.routing import Convention
from proxy.tokens import TokenEstimator


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Per-phase limits, seconds.

    connect_s: TCP connect to a backend. encode_s: a whole encoder call. prefill_s: a whole prefill call.
    first_byte_s: request sent → first response byte from PD/D (a non-streaming answer arrives whole, so
    this bounds it too). idle_s: gap between two streamed chunks.
    probe_s: one health probe. lookup_s: one eccache lookup (then: all-miss).
    publish_s: how long to wait, after an encoder answered, for its entries to be READY in eccache
    (encoders publish in the background); items still unpublished then go to PD with their media.
    """

    connect_s: float = 3.0
    encode_s: float = 60.0
    prefill_s: float = 120.0
    first_byte_s: float = 120.0
    idle_s: float = 120.0
    probe_s: float = 2.0
    lookup_s: float = 0.5
    publish_s: float = 2.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"timeout {name} must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    encode_urls: tuple[str, ...] = ()
    pd_urls: tuple[str, ...] = ()
    prefill_urls: tuple[str, ...] = ()
    decode_urls: tuple[str, ...] = ()
    convention: Convention = Convention.VLLM
    eccache_address: str | None = None
    eccache_token: str | None = None
    namespace: str | None = None          # fixed namespace for every model (else resolved by alias)
    alias_ttl_s: float = 5.0
    tenant_keys_file: str | None = None
    tenant_header: str | None = None
    uuid_secret: str = "eccache-proxy-default-secret"
    admin_key: str | None = None
    public_url: str | None = None         # how D reaches /v1/metaserver; default http://host:port
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    media: MediaPolicy = field(default_factory=MediaPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    probe_interval_s: float = 2.0
    max_request_nbytes: int = 64 * 1024 * 1024
    max_media_items: int = 32
    max_concurrent: int = 0               # client requests (streams included) in flight; 0 = unlimited
    max_attempts: int = 2                 # tries per backend step (retries go to another instance)
    encode_attempts: int = 2
    backend_connections: int = 256        # connection pool size per backend session

    def __post_init__(self) -> None:
        if not (0 <= self.port <= 65535):
            raise ValueError("port out of range")
        if self.pd_urls and (self.prefill_urls or self.decode_urls):
            raise ValueError("use either --pd or --prefill/--decode, not both")
        if bool(self.prefill_urls) != bool(self.decode_urls):
            raise ValueError("--prefill and --decode go together")
        if not self.pd_urls and not self.prefill_urls:
            raise ValueError("need --pd URL... or --prefill URL... --decode URL...")
        if self.max_attempts < 1 or self.encode_attempts < 1:
            raise ValueError("attempt counts must be >= 1")
        if self.probe_interval_s <= 0 or self.alias_ttl_s < 0:
            raise ValueError("probe_interval_s must be > 0 and alias_ttl_s >= 0")
        if self.max_request_nbytes <= 0 or self.max_media_items < 0 or self.max_concurrent < 0:
            raise ValueError("request limits must be positive")

    @property
    def disaggregated(self) -> bool:
        return bool(self.prefill_urls)
