"""Server configuration, checked once at construction."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?", re.I)
_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 1000**2, "MB": 1000**2, "G": 1000**3, "GB": 1000**3,
          "T": 1000**4, "TB": 1000**4, "KI": 1024, "KIB": 1024, "MI": 1024**2, "MIB": 1024**2,
          "GI": 1024**3, "GIB": 1024**3, "TI": 1024**4, "TIB": 1024**4}


def parse_size(text: str | int) -> int:
    """'256MiB' -> 268435456; plain integers are bytes."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 256MiB, 4GiB, 1000000)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").upper()])


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    pool_nbytes: int = 256 << 20
    redis_url: str | None = None
    transport: str = "mooncake"  # "mooncake" also serves inline; "inline" only inline
    te_host: str = "127.0.0.1"
    te_protocol: str = "tcp"
    auth_token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    metrics_port: int | None = None
    node_name: str | None = None
    advertise_address: str | None = None  # how clients reach this server (default: host:port)
    write_lease_ms: int = 30_000
    read_lease_ms: int = 30_000
    heartbeat_ms: int = 1_000
    max_workers: int = 32
    max_concurrent_streams: int = 256

    def __post_init__(self) -> None:
        if self.transport not in ("mooncake", "inline"):
            raise ValueError(f"transport must be mooncake or inline, not {self.transport!r}")
        if self.pool_nbytes < 1 << 20:
            raise ValueError("pool size must be at least 1MiB")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"bad port {self.port}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.heartbeat_ms < 100:
            raise ValueError("heartbeat must be at least 100 ms")
