"""Mock vLLM instances as real HTTP servers: encoder (E), prefill-decode (PD), prefill (P), decode (D).

They behave like vLLM with an EC connector, closely enough for the proxy's tests, bench and demo:
- E computes a deterministic embedding from the image bytes (CPU work proportional to pixels), writes it
  to the store (eccache ``Client``) under the part's ``uuid`` with msgpack metadata, and answers with
  vLLM-like ``ec_transfer_params``.
- PD / P read embeddings: a metadata-only ``image_embeds`` part must be in the store, else the request
  fails the way vLLM fails it (HTTP 500, or a streamed error event after the role chunk); an
  ``image_url`` part is loaded from the store by uuid or encoded locally.
- Output tokens derive deterministically from the prompt and the embeddings (the "prompt digest").
- P and D follow both E → P → D conventions; the layerwise D calls the proxy's metaserver back.
- ``GET /counters`` counts requests; ``POST /control`` injects faults (unhealthy, 5xx, crash before the
  first byte, crash after N chunks, delay, an engine error as vLLM reports it).

Run one: ``python -m proxy.mock_vllm --role pd --port 0 [--eccache H:P] --namespace NS --model tiny``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import numpy as np
from aiohttp import web
from blake3 import blake3

from eccache.placeholders import pack_placeholders
from proxy.imagesize import image_size
from proxy.media import decode_data_url


class EmbeddingStore(Protocol):
    def put(self, namespace: str, identifier: str, array: np.ndarray, metadata: bytes = b"") -> str: ...
    def get(self, namespace: str, identifier: str) -> np.ndarray | None: ...
    def set_alias(self, alias: str, namespace: str) -> None: ...


def compute_embedding(data: bytes, *, px: int = 28, width: int = 64) -> tuple[np.ndarray, dict[str, Any]]:
    """Deterministic ``[tokens, width]`` float32 embedding of an image; cost grows with its pixel count."""
    w, h = image_size(data) or (px, px)
    gh, gw = math.ceil(h / px), math.ceil(w / px)
    ntok = gh * gw
    pixels = np.frombuffer(blake3(data).digest(length=max(1, w * h * 3)), dtype=np.uint8)
    per_token = np.resize(pixels, ntok * width).reshape(ntok, width).astype(np.float32) / 255.0
    per_token[:, 0] = float(pixels.mean()) / 255.0
    return per_token, {"image_grid_thw": [1, 2 * gh, 2 * gw]}


def output_tokens(digest: bytes, n: int) -> list[str]:
    stream = blake3(digest).digest(length=max(1, n))
    return [f" t{b}" for b in stream[:n]]


@dataclass(kw_only=True)
class MockConfig:
    role: str                      # encode | pd | prefill | decode
    model: str = "tiny"
    namespace: str = "ns-tiny"
    convention: str = "vllm"       # for prefill/decode: vllm | layerwise
    token_delay_s: float = 0.0
    px: int = 28
    width: int = 64


@dataclass(eq=False)
class MockVllm:
    config: MockConfig
    store: EmbeddingStore | None = None
    counters: Counter[str] = field(default_factory=Counter)
    faults: dict[str, Any] = field(default_factory=dict)
    active: int = 0

    def __post_init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # ---- app --------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_post("/v1/completions", self.handle)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/counters", self.get_counters)
        app.router.add_post("/counters/reset", self.reset_counters)
        app.router.add_post("/control", self.control)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def health(self, request: web.Request) -> web.Response:
        self.counters["health"] += 1
        return web.Response(status=200 if self.faults.get("healthy", True) else 503)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.config.model, "object": "model"}]})

    async def get_counters(self, request: web.Request) -> web.Response:
        return web.json_response({**self.counters, "active": self.active})

    async def reset_counters(self, request: web.Request) -> web.Response:
        self.counters.clear()
        return web.json_response({})

    async def control(self, request: web.Request) -> web.Response:
        self.faults.update(await request.json())
        return web.json_response(self.faults)

    def _take_fault(self, name: str) -> Any:
        value = self.faults.get(name)
        if not value:
            return None
        left = self.faults.get(name + "_count", 1)
        if left <= 1:
            self.faults.pop(name, None)
            self.faults.pop(name + "_count", None)
        else:
            self.faults[name + "_count"] = left - 1
        return value

    # ---- requests ---------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        self.active += 1
        try:
            if (delay := self._take_fault("delay_s")) is not None:
                await asyncio.sleep(float(delay))
            if (status := self._take_fault("fail_status")) is not None:
                return _error(int(status), "injected failure")
            if self._take_fault("die_before_first_byte"):
                self.counters["crashes"] += 1
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            body = await request.json()
            chat = request.path.endswith("/chat/completions")
            if self._take_fault("generation_error"):
                return await self._fail_generation(request, body, chat)
            role = self.config.role
            if role == "encode":
                return await self._encode(body)
            if role == "prefill":
                return await self._prefill(body, chat)
            if role == "decode":
                return await self._decode(request, body, chat)
            digest = await self._digest(body, chat)
            if isinstance(digest, _MetadataMiss):
                return await self._fail_generation(request, body, chat)
            if isinstance(digest, web.Response):
                return digest
            return await self._generate(request, body, digest, chat)
        finally:
            self.active -= 1

    async def _encode(self, body: dict[str, Any]) -> web.Response:
        ec: dict[str, Any] = {}
        for index, (part, data) in enumerate(_image_parts(body)):
            if data is None:
                return _error(400, "encoder needs image_url parts")
            emb, meta = await asyncio.to_thread(compute_embedding, data, px=self.config.px,
                                                width=self.config.width)
            ident = part.get("uuid") or blake3(data).hexdigest()
            if self.store is not None:
                await asyncio.to_thread(self.store.put, self.config.namespace, ident, emb, pack_placeholders(meta))
            self.counters["encoded_items"] += 1
            ec[ident] = {"item_indices": [index], "metadata": meta}
        return web.json_response({
            "id": f"chatcmpl-enc-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": self.config.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            "ec_transfer_params": ec,
        })

    async def _digest(self, body: dict[str, Any], chat: bool) -> bytes | web.Response | _MetadataMiss:
        """Digest of prompt text + embeddings (the state a prefill would leave in the KV cache)."""
        h = blake3(self.config.model.encode())
        if not chat:
            h.update(json.dumps(body.get("prompt")).encode())
            return h.digest()
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                h.update(content.encode())
                continue
            for part in content or []:
                kind = part.get("type")
                if kind == "text":
                    h.update(part["text"].encode())
                elif kind == "image_embeds":
                    self.counters["metadata_only_parts"] += 1
                    emb = await self._load(part.get("uuid"))
                    if emb is None:  # vLLM + ECCacheConnector fails the request (FINISHED_ERROR)
                        self.counters["metadata_only_misses"] += 1
                        return _MetadataMiss(str(part.get("uuid")))
                    h.update(emb.tobytes())
                elif kind == "image_url":
                    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                    data = decode_data_url(url, 1 << 30)[1]
                    emb = await self._load(part.get("uuid"))
                    if emb is None:
                        self.counters["local_encodes"] += 1
                        emb, _ = await asyncio.to_thread(compute_embedding, data, px=self.config.px,
                                                         width=self.config.width)
                    h.update(emb.tobytes())
        return h.digest()

    async def _fail_generation(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        """What vLLM answers for a request its engine finished with an error: HTTP 500 when not streamed;
        when streamed, HTTP 200, the role chunk, then an error event."""
        if not body.get("stream"):
            return web.json_response(_GENERATION_ERROR, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        events = [_role_chunk(self.config.model, f"cmpl-{time.monotonic_ns()}")] if chat else []
        for event in (*events, _GENERATION_ERROR):
            await resp.write(_sse(event))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _load(self, uuid: Any) -> np.ndarray | None:
        if not isinstance(uuid, str) or self.store is None:
            return None
        try:
            emb = await asyncio.to_thread(self.store.get, self.config.namespace, uuid)
        except Exception:  # noqa: BLE001 - cache failure = miss
            return None
        if emb is not None:
            self.counters["cache_loads"] += 1
        return emb

    async def _prefill(self, body: dict[str, Any], chat: bool) -> web.Response:
        kv = body.get("kv_transfer_params") or {}
        if not kv.get("do_remote_decode"):
            return _error(400, "prefill expects kv_transfer_params.do_remote_decode")
        if self.config.convention == "layerwise" and not kv.get("remote_host"):
            return _error(400, "layerwise prefill expects D's parameters (remote_host)")
        digest = await self._digest(body, chat)
        if isinstance(digest, _MetadataMiss):
            return web.json_response(_GENERATION_ERROR, status=500)
        if isinstance(digest, web.Response):
            return digest
        self.counters["prefills"] += 1
        out = _whole(self.config.model, chat, output_tokens(digest, 1), "length")
        out["kv_transfer_params"] = {"do_remote_prefill": True, "do_remote_decode": False,
                                     "remote_engine_id": f"mock-p{self.url}", "remote_block_ids": [1, 2, 3],
                                     "remote_host": "127.0.0.1", "remote_port": 0,
                                     "prompt_digest": digest.hex()}
        return web.json_response(out)

    async def _decode(self, request: web.Request, body: dict[str, Any], chat: bool) -> web.StreamResponse:
        kv = body.get("kv_transfer_params") or {}
        if self.config.convention == "layerwise":
            if not (kv.get("do_remote_prefill") and kv.get("metaserver") and kv.get("request_id")):
                return _error(400, "layerwise decode expects do_remote_prefill, metaserver, request_id")
            if self._session is None:
                self._session = aiohttp.ClientSession()
            params = {"request_id": kv["request_id"], "remote_engine_id": f"mock-d{self.url}",
                      "remote_host": "127.0.0.1", "remote_port": 1, "remote_block_ids": [7, 8]}
            self.counters["metaserver_calls"] += 1
            try:
                async with self._session.post(kv["metaserver"], json=params) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status != 200:
                        return _error(500, f"metaserver failed: {answer}")
            except (aiohttp.ClientError, ValueError) as exc:
                return _error(500, f"metaserver unreachable: {exc!r}")
            kv = answer.get("kv_transfer_params") or {}
        digest_hex = kv.get("prompt_digest")
        if not isinstance(digest_hex, str):
            return _error(400, "decode expects kv_transfer_params from a prefill")
        self.counters["decodes"] += 1
        return await self._generate(request, body, bytes.fromhex(digest_hex), chat)

    async def _generate(self, request: web.Request, body: dict[str, Any], digest: bytes,
                        chat: bool) -> web.StreamResponse:
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        toks = output_tokens(digest, int(max_tokens))
        if not body.get("stream"):
            if self.config.token_delay_s:
                await asyncio.sleep(self.config.token_delay_s * len(toks))
            return web.json_response(_whole(self.config.model, chat, toks, "length"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        die_after = self._take_fault("die_after_chunks")
        cid = f"cmpl-{time.monotonic_ns()}"
        if chat:  # vLLM opens a chat stream with a role-only chunk
            await resp.write(_sse(_role_chunk(self.config.model, cid)))
        events = [_chunk(self.config.model, chat, cid, tok, None) for tok in toks]
        events.append(_chunk(self.config.model, chat, cid, "", "length"))
        for n, event in enumerate(events):
            if die_after is not None and n >= int(die_after):
                self.counters["crashes"] += 1
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(_sse(event))
            if self.config.token_delay_s:
                await asyncio.sleep(self.config.token_delay_s)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        self.counters["completed_streams"] += 1
        return resp


_GENERATION_ERROR = {"error": {"message": "Internal server error", "type": "InternalServerError", "param": None,
                               "code": 500}}


@dataclass(frozen=True)
class _MetadataMiss:
    uuid: str


def _image_parts(body: dict[str, Any]) -> list[tuple[dict[str, Any], bytes | None]]:
    out: list[tuple[dict[str, Any], bytes | None]] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                out.append((part, decode_data_url(url, 1 << 30)[1] if url.startswith("data:") else None))
    return out


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "BadRequestError", "code": status}},
                             status=status)


def _whole(model: str, chat: bool, toks: list[str], finish: str) -> dict[str, Any]:
    text = "".join(toks)
    choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                              if chat else {"index": 0, "text": text, "finish_reason": finish})
    return {"id": f"cmpl-{time.monotonic_ns()}", "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice],
            "usage": {"prompt_tokens": 8, "completion_tokens": len(toks), "total_tokens": 8 + len(toks)}}


def _chunk(model: str, chat: bool, cid: str, tok: str, finish: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = ({"index": 0, "delta": {"content": tok}, "finish_reason": finish}
                              if chat else {"index": 0, "text": tok, "finish_reason": finish})
    return {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
            "model": model, "choices": [choice]}


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _role_chunk(model: str, cid: str) -> dict[str, Any]:
    chunk = _chunk(model, True, cid, "", None)
    chunk["choices"][0]["delta"]["role"] = "assistant"
    return chunk


@dataclass(eq=False)
class RunningMock:
    mock: MockVllm
    runner: web.AppRunner
    url: str

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_mock(config: MockConfig, store: EmbeddingStore | None = None, *, host: str = "127.0.0.1",
                     port: int = 0) -> RunningMock:
    """Start a mock instance; registers ``model -> namespace`` in the store like a connector would."""
    mock = MockVllm(config, store)
    if store is not None:
        with contextlib.suppress(Exception):  # a cache that is down must not stop the instance
            await asyncio.to_thread(store.set_alias, config.model, config.namespace)
    runner = web.AppRunner(mock.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    assert site._server is not None
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    mock.url = f"http://{host}:{bound}"
    return RunningMock(mock, runner, mock.url)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m proxy.mock_vllm")
    p.add_argument("--role", choices=["encode", "pd", "prefill", "decode"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--model", default="tiny")
    p.add_argument("--namespace", default="ns-tiny")
    p.add_argument("--convention", choices=["vllm", "layerwise"], default="vllm")
    p.add_argument("--eccache", default=None)
    p.add_argument("--eccache-token", default=None)
    p.add_argument("--token-delay", type=float, default=0.0)
    args = p.parse_args(argv)

    async def run() -> None:
        store: EmbeddingStore | None = None
        if args.eccache:
            from eccache import Client

            store = Client(args.eccache, auth_token=args.eccache_token)
        cfg = MockConfig(role=args.role, model=args.model, namespace=args.namespace, convention=args.convention,
                         token_delay_s=args.token_delay)
        running = await start_mock(cfg, store, host=args.host, port=args.port)
        print(f"mock vllm {args.role} listening on {running.url.removeprefix('http://')}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
