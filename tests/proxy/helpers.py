"""Harness for proxy tests: mock vLLM instances (real HTTP servers) + a proxy, all in one event loop.

Tests are plain functions running ``asyncio.run(...)`` (no async plugin needed). ``harness(...)`` starts
encoders / PD / P / D mocks sharing one embedding store (in-memory, or a real eccache server for
``integration`` tests) and a proxy in front of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from proxy.balancer import HealthPolicy
from proxy.cache import CacheView, open_cache
from proxy.config import ProxyConfig, Timeouts
from proxy.identity import TenantDirectory
from proxy.imagesize import make_png
from proxy.memstore import AsyncMemoryBackend, MemoryStore
from proxy.mock_vllm import MockConfig, RunningMock, start_mock
from proxy.routing import Convention
from proxy.server import RunningProxy, start_proxy

MODEL = "tiny"
NAMESPACE = "ns-tiny"


def png_data_url(width: int = 64, height: int = 64, seed: int = 0) -> str:
    return "data:image/png;base64," + base64.b64encode(make_png(width, height, seed)).decode()


def chat_body(*, text: str = "describe", images: tuple[str, ...] = (), stream: bool = False,
              max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream,
            "max_tokens": max_tokens, **extra}


@dataclass(eq=False)
class Harness:
    proxy: RunningProxy
    encoders: list[RunningMock]
    pds: list[RunningMock]
    prefills: list[RunningMock]
    decodes: list[RunningMock]
    store: Any
    http: aiohttp.ClientSession
    extra_mocks: list[RunningMock] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.proxy.url

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.http.post(self.url + path, json=body, headers=headers) as resp:
            data = await resp.read()
            try:
                import json

                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data

    async def chat(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
        return await self.post("/v1/chat/completions", body, headers)

    async def stream_text(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        """Streams a chat request; returns (status, concatenated delta text, raw bytes)."""
        import json

        async with self.http.post(self.url + "/v1/chat/completions", json={**body, "stream": True},
                                  headers=headers) as resp:
            raw = await resp.read()
        text = ""
        for line in raw.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                event = json.loads(line[6:])
                if "choices" in event:
                    text += event["choices"][0]["delta"].get("content") or ""
        return resp.status, text, raw

    def counters(self, mocks: list[RunningMock]) -> int:
        return sum(m.mock.counters["requests"] for m in mocks)

    def assert_idle(self) -> None:
        core = self.proxy.core
        assert core.balancer.live_leases() == 0
        assert core.balancer.active_tokens() == 0
        assert core.balancer.active_requests() == 0
        assert core.flights.in_flight() == 0
        assert not core.pending


@contextlib.asynccontextmanager
async def harness(*, encoders: int = 1, pds: int = 1, prefills: int = 0, decodes: int = 0,
                  convention: str = "vllm", store: Any = None, cache: CacheView | None = None,
                  eccache_address: str | None = None, tenants: TenantDirectory | None = None,
                  token_delay_s: float = 0.0, probes: bool = False, pd_store: Any = "same",
                  **config: Any) -> AsyncIterator[Harness]:
    if store is None:
        if eccache_address is not None:
            from eccache import Client

            store = Client(eccache_address)
        else:
            store = MemoryStore()
    if cache is None:
        if eccache_address is not None:
            cache = open_cache(eccache_address, None, lookup_timeout_s=2.0, alias_ttl_s=5.0, fixed_namespace=None)
        else:
            cache = CacheView(AsyncMemoryBackend(store), lookup_timeout_s=2.0)
    reader_store = store if pd_store == "same" else pd_store

    def mk(role: str, st: Any) -> MockConfig:
        return MockConfig(role=role, model=MODEL, namespace=NAMESPACE, convention=convention,
                          token_delay_s=token_delay_s)

    enc = [await start_mock(mk("encode", store), store) for _ in range(encoders)]
    pd = [await start_mock(mk("pd", reader_store), reader_store) for _ in range(pds)]
    pre = [await start_mock(mk("prefill", reader_store), reader_store) for _ in range(prefills)]
    dec = [await start_mock(mk("decode", reader_store), reader_store) for _ in range(decodes)]
    timeouts = config.pop("timeouts", Timeouts(connect_s=1.0, encode_s=10.0, prefill_s=10.0, first_byte_s=10.0,
                                               idle_s=10.0, probe_s=1.0, lookup_s=2.0))
    cfg = ProxyConfig(host="127.0.0.1", port=0, encode_urls=tuple(m.url for m in enc),
                      pd_urls=tuple(m.url for m in pd), prefill_urls=tuple(m.url for m in pre),
                      decode_urls=tuple(m.url for m in dec), convention=Convention(convention),
                      timeouts=timeouts, probe_interval_s=config.pop("probe_interval_s", 0.1),
                      health=config.pop("health", HealthPolicy(eject_after=2, readmit_after=1)), **config)
    proxy = await start_proxy(cfg, cache=cache, tenants=tenants, probes=probes)
    http = aiohttp.ClientSession()
    h = Harness(proxy, enc, pd, pre, dec, store, http)
    try:
        yield h
    finally:
        await http.close()
        await proxy.stop()
        for m in enc + pd + pre + dec + h.extra_mocks:
            await m.stop()
        if eccache_address is not None:
            with contextlib.suppress(Exception):
                store.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))
