"""Connector configuration: `ec_connector_extra_config` parsed into one checked dataclass (pure).

Read once when a connector is built (scheduler and worker sides each build their own); never re-read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

AUTH_TOKEN_ENV = "ECCACHE_AUTH_TOKEN"
_TRANSPORTS = (None, "mooncake", "inline")
_KNOWN_KEYS = frozenset(
    {
        "server", "namespace", "auth_token", "transport", "lease_ms", "timeout_ms",
        "save_queue_bytes", "staging_bytes", "result_ttl_ms", "result_cache_entries",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectorConfig:
    """What the connector needs from `ec_connector_extra_config`.

    Attributes:
        servers: eccache server addresses (`host:port`), tried in order; the first that answers is used.
        namespace: optional prefix (tenant, deployment) joined to the namespace derived from the model.
        auth_token: bearer token for the eccache control plane (else env ECCACHE_AUTH_TOKEN).
        transport: "mooncake", "inline" or None (the client picks).
        lease_ms: read-lease TTL taken when the scheduler resolves an item; covers schedule → load.
        timeout_ms: longest a request waits for its items to be resolved before they count as misses.
        save_queue_bytes: bytes of embeddings waiting to be published; beyond it saves are skipped.
        staging_bytes: host staging kept for loads (reused); larger entries use a one-off buffer.
        result_ttl_ms: how long a resolution (hit or miss) is trusted by `has_cache_item`.
        result_cache_entries: bound on remembered resolutions.
    """

    servers: tuple[str, ...]
    namespace: str = ""
    auth_token: str | None = None
    transport: str | None = None
    lease_ms: int = 30_000
    timeout_ms: int = 2_000
    save_queue_bytes: int = 512 * 1024 * 1024
    staging_bytes: int = 64 * 1024 * 1024
    result_ttl_ms: int = 5_000
    result_cache_entries: int = 4096

    def __post_init__(self) -> None:
        if not self.servers or any(not s or ":" not in s for s in self.servers):
            raise ValueError(f"ECCacheConnector: 'server' must name host:port addresses, got {self.servers!r}")
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"ECCacheConnector: 'transport' must be one of {_TRANSPORTS}, got {self.transport!r}")
        for name in ("lease_ms", "timeout_ms", "result_ttl_ms", "result_cache_entries", "staging_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ECCacheConnector: {name!r} must be positive")
        if self.save_queue_bytes < 0:
            raise ValueError("ECCacheConnector: 'save_queue_bytes' must be >= 0")

    @classmethod
    def from_extra_config(
        cls, extra: Mapping[str, Any] | None, env: Mapping[str, str] | None = None
    ) -> ConnectorConfig:
        """Builds the config from `ec_connector_extra_config`.

        Args:
            extra: the dict vLLM passes through unchanged.
            env: environment to read ECCACHE_AUTH_TOKEN from (default os.environ).

        Raises:
            ValueError: an unknown key, a missing `server`, or a value out of range.
        """
        extra = dict(extra or {})
        env = os.environ if env is None else env
        unknown = set(extra) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"ECCacheConnector: unknown config keys {sorted(unknown)}")
        if "server" not in extra:
            raise ValueError("ECCacheConnector: ec_connector_extra_config needs 'server'")
        kwargs: dict[str, Any] = {"servers": parse_servers(extra.pop("server"))}
        token = extra.pop("auth_token", None) or env.get(AUTH_TOKEN_ENV) or None
        kwargs["auth_token"] = token
        if "namespace" in extra:
            kwargs["namespace"] = str(extra.pop("namespace") or "")
        if "transport" in extra:
            kwargs["transport"] = extra.pop("transport") or None
        for key, value in extra.items():
            kwargs[key] = int(value)
        return cls(**kwargs)


def parse_servers(value: Any) -> tuple[str, ...]:
    """Accepts "h:p", "h1:p1,h2:p2" or a list of addresses."""
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = [str(v) for v in value]
    else:
        raise ValueError(f"ECCacheConnector: 'server' must be a string or a list, got {type(value).__name__}")
    return tuple(p.strip() for p in parts if p.strip())
