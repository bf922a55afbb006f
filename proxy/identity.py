"""Tenants and item uuid derivation (pure).

An item's uuid is what vLLM uses verbatim as its multimodal identifier, i.e. the eccache key. The proxy
always derives it and never trusts a client-sent one:

    uuid = blake3(key = tenant_key, data = len(namespace) || namespace || blake3(content)).hexdigest()

``tenant_key`` is a per-tenant 32-byte secret: two tenants sending the same image get different uuids, so
neither can read, probe or poison the other's entries. Without tenants every request uses the proxy-wide
key (derived from ``--uuid-secret``), so several proxy replicas with the same secret agree on uuids.

Tenant file (``--tenant-keys FILE``), JSON: ``{"<api key>": {"tenant": "acme", "secret": "..."}}``;
``secret`` is optional (then derived from the proxy secret and the tenant name).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blake3 import blake3

from proxy.errors import Unauthenticated

_KEY_CONTEXT = "eccache-proxy 2026 item-uuid key v1"
_TENANT_CONTEXT = "eccache-proxy 2026 tenant key v1"


def content_hash(data: bytes) -> bytes:
    """blake3 digest (32 bytes) of media content."""
    return blake3(data, max_threads=blake3.AUTO if len(data) > (1 << 20) else 1).digest()


def derive_key(secret: str | bytes, context: str = _KEY_CONTEXT) -> bytes:
    """A 32-byte key derived from an arbitrary secret."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return blake3(raw, derive_key_context=context).digest()


def derive_uuid(tenant_key: bytes, namespace: str, digest: bytes) -> str:
    """The item uuid for content ``digest`` in ``namespace`` under ``tenant_key`` (64 hex chars)."""
    ns = namespace.encode("utf-8")
    hasher = blake3(key=tenant_key)
    hasher.update(len(ns).to_bytes(4, "big"))
    hasher.update(ns)
    hasher.update(digest)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant: its name ("" for the shared default) and its uuid key."""

    name: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantDirectory:
    """Maps a request's API key (or tenant header) to a Tenant.

    Args:
        base_key: proxy-wide key (derive_key of --uuid-secret).
        by_api_key: blake3(api key) digest -> Tenant; non-empty means an API key is required.
        tenant_header: lower-case header naming the tenant (trusted, e.g. set by a gateway), or None.
    """

    base_key: bytes = field(repr=False)
    by_api_key: Mapping[bytes, Tenant] = field(default_factory=dict, repr=False)
    tenant_header: str | None = None

    def __post_init__(self) -> None:
        if len(self.base_key) != 32:
            raise ValueError("base_key must be 32 bytes")

    @property
    def requires_api_key(self) -> bool:
        return bool(self.by_api_key)

    def tenant_for_name(self, name: str) -> Tenant:
        """The tenant named ``name`` with a key derived from the base key (header mode)."""
        if not name:
            return Tenant("", self.base_key)
        return Tenant(name, derive_key(self.base_key + name.encode("utf-8"), _TENANT_CONTEXT))

    def resolve(self, headers: Mapping[str, str]) -> Tenant:
        """The tenant of a request given its headers (case-insensitive mapping).

        Raises:
            Unauthenticated: API keys are configured and the request has none or an unknown one.
        """
        if self.by_api_key:
            api_key = api_key_from_headers(headers)
            if api_key is None:
                raise Unauthenticated("missing API key")
            tenant = self.by_api_key.get(blake3(api_key.encode("utf-8")).digest())
            if tenant is None:
                raise Unauthenticated("invalid API key")
            return tenant
        if self.tenant_header:
            return self.tenant_for_name(headers.get(self.tenant_header, "").strip())
        return Tenant("", self.base_key)


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The bearer token of ``Authorization`` or the ``x-api-key`` header, if any."""
    auth = headers.get("Authorization") or headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key") or headers.get("X-Api-Key")
    return key.strip() if key and key.strip() else None


def load_tenant_directory(path: str | None, *, uuid_secret: str, tenant_header: str | None) -> TenantDirectory:
    """Build the directory from a tenant-keys JSON file (or none).

    Raises:
        ValueError: malformed file.
    """
    base_key = derive_key(uuid_secret)
    entries: dict[bytes, Tenant] = {}
    if path is not None:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("tenant keys file must hold a JSON object {api_key: {tenant, secret?}}")
        for api_key, spec in raw.items():
            if isinstance(spec, str):
                spec = {"tenant": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("tenant"), str) or not spec["tenant"]:
                raise ValueError(f"tenant keys entry for {api_key[:4]}... needs a non-empty 'tenant'")
            name = spec["tenant"]
            secret = spec.get("secret")
            if secret is not None and not isinstance(secret, str):
                raise ValueError("tenant 'secret' must be a string")
            key = (derive_key(secret, _TENANT_CONTEXT) if secret
                   else derive_key(base_key + name.encode("utf-8"), _TENANT_CONTEXT))
            entries[blake3(api_key.encode("utf-8")).digest()] = Tenant(name, key)
    return TenantDirectory(base_key=base_key, by_api_key=entries,
                           tenant_header=tenant_header.lower() if tenant_header else None)


def constant_time_equals(given: str | None, expected: str | None) -> bool:
    """Compare an admin key in constant time; False when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
