"""The proxy's request pipeline: media step (hash → uuid → lookup → encode cold, single flight), then the
P/PD/D steps with least-loaded picking and retries before the first byte.

``ProxyCore`` owns the balancer, backend sessions, eccache view, media fetcher, tenants and metrics; it is
created by ``proxy.app.build_app`` and closed with the app. Every lease it takes is released in a
``finally`` (success, error, timeout, cancellation, client disconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from proxy.admission import Admission
from proxy.backends import Backends, UpstreamStream
from proxy.balancer import Balancer, Instance, Lease, Role
from proxy.cache import CacheView
from proxy.config import ProxyConfig
from proxy.errors import NoInstanceAvailable, NotFound, UpstreamError, UpstreamFailedRequest, UpstreamRejected
from proxy.fetch import Media, MediaFetcher
from proxy.identity import Tenant, TenantDirectory, content_hash, derive_uuid
from proxy.imagesize import image_format
from proxy.media import check_image, encode_data_url
from proxy.metrics import ProxyMetrics
from proxy.rewrite import (
    ItemPlan,
    build_decode_body_layerwise,
    build_decode_body_vllm,
    build_encoder_body,
    build_pd_body,
    build_prefill_body_layerwise,
    build_prefill_body_vllm,
    uses_metadata_only,
)
from proxy.routing import ChatRequest, Convention, Path, choose_path
from proxy.singleflight import SingleFlight

log = logging.getLogger(__name__)
T = TypeVar("T")
CHAT_PATH = "/v1/chat/completions"
_OFFLOAD_NBYTES = 1 << 20  # hash/parse bigger payloads in a worker thread, off the event loop


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes. Strings holding lone surrogates (valid JSON escapes a client may send, but not
    encodable as UTF-8) fall back to ASCII escapes, which carry the same value."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class Encoded:
    """Outcome of the encoder step for one item: ``ok`` False means PD gets the raw media."""

    ok: bool
    metadata: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Prepared:
    """What the final steps send: ``payload`` first, ``fallback`` (media instead of metadata-only) if that
    is rejected before the first byte."""

    body: Mapping[str, Any] | None
    payload: bytes
    fallback: Mapping[str, Any] | None
    tokens: int
    prefill_tokens: int
    path: Path


@dataclass(slots=True)
class PendingPrefill:
    """A layerwise request waiting for D's metaserver call."""

    body: Mapping[str, Any]
    tokens: int
    route: str


@dataclass(eq=False)
class ProxyCore:
    config: ProxyConfig
    cache: CacheView
    tenants: TenantDirectory
    metrics: ProxyMetrics = field(default_factory=ProxyMetrics)

    def __post_init__(self) -> None:
        cfg = self.config
        self.balancer = Balancer(cfg.health)
        for role, urls in ((Role.ENCODE, cfg.encode_urls), (Role.PD, cfg.pd_urls),
                           (Role.PREFILL, cfg.prefill_urls), (Role.DECODE, cfg.decode_urls)):
            for url in urls:
                self.balancer.pool(role).add(url)
        self.backends = Backends(connect_s=cfg.timeouts.connect_s, connections=cfg.backend_connections)
        self.fetcher = MediaFetcher(cfg.media)
        self.flights: SingleFlight[str, Encoded] = SingleFlight()
        self.pending: dict[str, PendingPrefill] = {}
        self.admission = Admission(cfg.max_concurrent)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metaserver_url = (cfg.public_url or f"http://{cfg.host}:{cfg.port}").rstrip("/") + "/v1/metaserver"

    @property
    def final_role(self) -> Role:
        return Role.DECODE if self.config.disaggregated else Role.PD

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.backends.close()
        await self.fetcher.close()
        await self.cache.close()

    # ---- picking with retries ---------------------------------------------------------------------------
    async def attempt(self, role: Role, tokens: int, fn: Callable[[Instance], Awaitable[T]],
                      attempts: int | None = None) -> tuple[Lease, T]:
        """Run ``fn`` on the least-loaded instance of ``role``; on a retryable failure try another one.

        Returns the lease (caller releases it) and ``fn``'s result. Raises the last UpstreamError, or
        NoInstanceAvailable when no instance was ever available.
        """
        pool = self.balancer.pool(role)
        tried: list[Instance] = []
        last: UpstreamError | None = None
        tries = attempts or self.config.max_attempts
        for i in range(tries):
            try:
                lease = pool.acquire(tokens, exclude=tried)
            except NoInstanceAvailable:
                if last is not None:
                    raise last from None
                raise
            done = False
            try:
                result = await fn(lease.instance)
                done = True
                pool.record_success(lease.instance)
                return lease, result
            except (UpstreamRejected, UpstreamFailedRequest):
                raise  # the instance answered: the request failed, not the instance
            except UpstreamError as exc:
                last = exc
                tried.append(lease.instance)
                self.metrics.upstream_errors.labels(role.value).inc()
                if pool.record_failure(lease.instance):
                    self.metrics.ejections.labels(role.value).inc()
                log.info("%s %s failed (try %d): %s", role.value, lease.instance.url, i + 1, exc)
                if not exc.retryable:
                    raise
                if i + 1 < tries:
                    self.metrics.retries.labels(role.value).inc()
            finally:
                if not done:
                    lease.release()
        assert last is not None
        raise last

    # ---- media step -------------------------------------------------------------------------------------
    async def prepare_chat(self, req: ChatRequest, raw: bytes, tenant: Tenant) -> Prepared:
        """Route a chat request and, for multimodal ones, run the media/encoder step."""
        est = self.config.estimator
        path = choose_path(has_media=req.has_media, disaggregated=self.config.disaggregated)
        text_tokens = est.text_tokens(req.text_chars)
        out_tokens = est.output_tokens(req.body.get("max_completion_tokens") or req.body.get("max_tokens"))
        if not req.has_media:
            payload = dumps(req.body) if req.modified else raw
            return Prepared(req.body, payload, None, text_tokens + out_tokens, text_tokens, path)
        items, image_tokens = await self._media_step(req, tenant)
        body = build_pd_body(req.body, items, metadata_only=True)
        fallback = build_pd_body(req.body, items, metadata_only=False) if uses_metadata_only(items) else None
        prompt = text_tokens + image_tokens
        return Prepared(body, dumps(body), fallback, prompt + out_tokens, prompt, path)

    async def _media_step(self, req: ChatRequest, tenant: Tenant) -> tuple[list[ItemPlan], int]:
        est = self.config.estimator
        namespace = await self.cache.namespace_for(req.model)
        if namespace is None:
            self.metrics.namespace_unresolved.inc()
        uuid_ns = namespace or f"model:{req.model}"
        medias: list[Media] = await asyncio.gather(*(self.fetcher.fetch(ref.url) for ref in req.media))
        sizes = [check_image(m.data, m.mime if m.declared_mime else None, self.config.media) for m in medias]
        uuids: list[str] = []
        urls: list[str] = []
        tokens: dict[str, int] = {}
        big = sum(len(m.data) for m in medias) > _OFFLOAD_NBYTES
        digests = (await asyncio.to_thread(lambda: [content_hash(m.data) for m in medias]) if big
                   else [content_hash(m.data) for m in medias])
        for media, digest, size in zip(medias, digests, sizes, strict=True):
            ident = derive_uuid(tenant.key, uuid_ns, digest)
            uuids.append(ident)
            urls.append(media.url or encode_data_url(media.data, _mime_of(media)))
            tokens[ident] = est.image_tokens(size)
        unique = list(dict.fromkeys(uuids))
        known: dict[str, Mapping[str, Any] | None] = {}
        if namespace is not None and req.identifier_predictable:
            with self.metrics.lookup_seconds.time():
                warm = await self.cache.lookup(namespace, unique)
            for ident, entry in zip(unique, warm, strict=True):
                if entry is not None:
                    known[ident] = entry.metadata
        if not req.identifier_predictable:
            self.metrics.items.labels("unpredictable").inc(len(unique))
        self.metrics.items.labels("warm").inc(len(known))
        cold = [u for u in unique if u not in known]
        self.metrics.items.labels("cold").inc(len(cold))
        if cold:
            url_of = dict(zip(uuids, urls, strict=True))
            results = await self._encode(req, [(u, url_of[u], tokens[u]) for u in cold])
            for ident, res in results.items():
                known[ident] = res.metadata if res.ok else None
            if namespace is not None:
                published = await self._await_published(namespace, [u for u in cold if known.get(u)])
                for ident in cold:
                    if ident not in published:
                        known[ident] = None  # PD gets the media: it loads once published, or encodes
        use_meta = req.identifier_predictable
        items = [ItemPlan(ref, ident, url, known.get(ident) if use_meta else None)
                 for ref, ident, url in zip(req.media, uuids, urls, strict=True)]
        return items, sum(tokens[u] for u in uuids)

    async def _await_published(self, namespace: str, idents: list[str]) -> set[str]:
        """The encoded items READY in eccache within ``publish_s``.

        An encoder answers as soon as it has encoded and publishes in the background, so a PD asked for a
        metadata-only load at once could miss; a streamed miss cannot be retried once PD started to answer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeouts.publish_s
        ready: set[str] = set()
        pending = idents
        delay = 0.005
        while pending:
            found = await self.cache.ready(namespace, pending)
            if found is None:  # eccache is not answering: PD gets the media instead
                break
            ready.update(i for i, ok in zip(pending, found, strict=True) if ok)
            pending = [i for i in pending if i not in ready]
            if not pending or loop.time() + delay > deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        if pending:
            self.metrics.items.labels("unpublished").inc(len(pending))
        return ready

    async def _encode(self, req: ChatRequest, cold: list[tuple[str, str, int]]) -> dict[str, Encoded]:
        """Encode cold items once across concurrent requests; never raises for encoder failures.

        The flight key is the uuid (already tenant- and namespace-scoped), plus the processor kwargs when
        the request carries any (then vLLM's identifier depends on them too).
        """
        suffix = "" if req.identifier_predictable else "|" + _kwargs_digest(req.body)
        key_of = {u: u + suffix for u, _, _ in cold}
        owned, waiting = self.flights.claim(key_of.values())
        if waiting:
            self.metrics.items.labels("joined").inc(len(waiting))
        results: dict[str, Encoded] = {}
        task: asyncio.Task[dict[str, Encoded]] | None = None
        if owned:
            owned_set = set(owned)
            mine = [c for c in cold if key_of[c[0]] in owned_set]
            task = asyncio.create_task(self._encode_batch(req.model, mine, req.body, key_of))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if task is not None:
            results.update(await asyncio.shield(task))
        for u, key in key_of.items():
            fut = waiting.get(key)
            if fut is not None:
                results[u] = await asyncio.shield(fut)
        return results

    async def _encode_batch(self, model: str, items: list[tuple[str, str, int]], extra: Mapping[str, Any],
                            key_of: Mapping[str, str]) -> dict[str, Encoded]:
        """One encoder request for ``items`` (retried on another encoder); resolves their flights."""
        results: dict[str, Encoded] = {u: Encoded(False) for u, _, _ in items}
        try:
            if not len(self.balancer.pool(Role.ENCODE)):
                return results
            payload = dumps(build_encoder_body(model, [(u, url) for u, url, _ in items], extra))
            timeout_s = self.config.timeouts.encode_s

            async def call(inst: Instance) -> bytes:
                return await self.backends.post_json(inst.url, CHAT_PATH, payload, timeout_s=timeout_s)

            try:
                lease, data = await self.attempt(Role.ENCODE, sum(t for _, _, t in items), call,
                                                 attempts=self.config.encode_attempts)
                lease.release()
            except (UpstreamError, NoInstanceAvailable) as exc:
                log.warning("encoder step failed, PD gets the raw media: %s", exc)
                self.metrics.encoder_calls.labels("failed").inc()
                self.metrics.items.labels("encode_failed").inc(len(items))
                return results
            self.metrics.encoder_calls.labels("ok").inc()
            params = _ec_transfer_params(data)
            for ident, _, _ in items:
                entry = params.get(ident)
                meta = entry.get("metadata") if isinstance(entry, dict) else None
                results[ident] = Encoded(True, meta if isinstance(meta, dict) and meta else None)
            self.metrics.items.labels("encoded").inc(len(items))
            return results
        finally:
            for ident, res in results.items():
                self.flights.resolve(key_of[ident], res)

    # ---- P / D steps ------------------------------------------------------------------------------------
    async def open_final(self, prep: Prepared, route: str, *, stream_timeout: bool = True
                         ) -> tuple[Lease, UpstreamStream]:
        """Run the prefill step if any, then open the final (PD or D) response: first byte received."""
        try:
            return await self._open_final(prep, route, prep.payload, prep.body,
                                          metadata_only=prep.fallback is not None)
        except UpstreamError as exc:
            if prep.fallback is None or not _is_rejection_or_error(exc):
                raise
        # A metadata-only request was refused (e.g. the entry was evicted): resend with the media.
        self.metrics.metadata_fallbacks.inc()
        return await self._open_final(prep, route, dumps(prep.fallback), prep.fallback)

    async def _open_final(self, prep: Prepared, route: str, payload: bytes, body: Mapping[str, Any] | None,
                          *, metadata_only: bool = False) -> tuple[Lease, UpstreamStream]:
        """``metadata_only``: an instance that answers with an error failed the request (its embedding could
        not be loaded), it is not broken: no other instance is tried, none is ejected, the caller re-sends."""
        t = self.config.timeouts
        if prep.path in (Path.PD, Path.E_PD):
            return await self._stream_from(Role.PD, prep.tokens, route, lambda inst: payload,
                                           answered_error_is_final=metadata_only)
        assert body is not None
        if self.config.convention is Convention.VLLM:
            p_payload = dumps(build_prefill_body_vllm(body))

            async def prefill(inst: Instance) -> bytes:
                return await _final_if_answered(
                    self.backends.post_json(inst.url, route, p_payload, timeout_s=t.prefill_s), metadata_only)

            p_lease, p_data = await self.attempt(Role.PREFILL, prep.prefill_tokens, prefill)
            p_lease.release()
            kv = _json_field(p_data, "kv_transfer_params")
            if not isinstance(kv, dict):
                raise UpstreamError("prefill answered without kv_transfer_params", retryable=False)
            d_payload = dumps(build_decode_body_vllm(body, kv))
            return await self._stream_from(Role.DECODE, prep.tokens, route, lambda inst: d_payload)
        # Layerwise: D first; it calls /v1/metaserver, which dispatches the prefill.
        rids: list[str] = []

        def d_payload_for(inst: Instance) -> bytes:
            rid = uuidlib.uuid4().hex
            rids.append(rid)
            self.pending[rid] = PendingPrefill(body=body, tokens=prep.prefill_tokens, route=route)
            return dumps(build_decode_body_layerwise(body, self.metaserver_url, rid))

        ok = False
        try:
            result = await self._stream_from(Role.DECODE, prep.tokens, route, d_payload_for,
                                             headers_for=lambda: {"X-Request-Id": rids[-1]})
            ok = True
            return result
        finally:
            # Failed attempts can no longer be called back. The D that answered may still call (if it
            # streams before its prefill); its entry expires after the prefill timeout.
            loop = asyncio.get_running_loop()
            for rid in rids:
                if ok and rid == rids[-1] and rid in self.pending:
                    loop.call_later(t.prefill_s, self.pending.pop, rid, None)
                else:
                    self.pending.pop(rid, None)

    async def _stream_from(self, role: Role, tokens: int, route: str, payload_for: Callable[[Instance], bytes],
                           headers_for: Callable[[], dict[str, str]] | None = None,
                           answered_error_is_final: bool = False) -> tuple[Lease, UpstreamStream]:
        t = self.config.timeouts

        async def call(inst: Instance) -> UpstreamStream:
            payload = payload_for(inst)
            opened = self.backends.open_stream(inst.url, route, payload, first_byte_s=t.first_byte_s,
                                               idle_s=t.idle_s, hold_opening=True,
                                               headers=headers_for() if headers_for else None)
            return await _final_if_answered(opened, answered_error_is_final)

        return await self.attempt(role, tokens, call)

    async def metaserver(self, params: Mapping[str, Any]) -> bytes:
        """D's call-back (layerwise): run the prefill on the least-loaded P; returns P's answer.

        Raises:
            NotFound: unknown or already used request_id.
        """
        rid = params.get("request_id")
        pending = self.pending.pop(rid, None) if isinstance(rid, str) else None
        if pending is None:  # unknown, expired, or already used: a request id is good for one call
            raise NotFound("unknown request_id")
        payload = dumps(build_prefill_body_layerwise(pending.body, params))
        timeout_s = self.config.timeouts.prefill_s

        async def prefill(inst: Instance) -> bytes:
            return await self.backends.post_json(inst.url, pending.route, payload, timeout_s=timeout_s)

        lease, data = await self.attempt(Role.PREFILL, pending.tokens, prefill)
        lease.release()
        return data


def _kwargs_digest(body: Mapping[str, Any]) -> str:
    kwargs = {k: body.get(k) for k in ("mm_processor_kwargs", "media_io_kwargs")}
    return content_hash(json.dumps(kwargs, sort_keys=True, default=str).encode()).hex()[:32]


def _mime_of(media: Media) -> str:
    fmt = image_format(media.data)
    if fmt is not None:
        return f"image/{fmt}"
    return media.mime if media.mime.startswith("image/") else "application/octet-stream"


async def _final_if_answered(call: Awaitable[T], enabled: bool) -> T:
    """Awaits ``call``; when ``enabled``, a 5xx carrying an OpenAI error body becomes UpstreamFailedRequest."""
    try:
        return await call
    except UpstreamError as exc:
        failed = _answered_failure(exc) if enabled else None
        if failed is None:
            raise
        raise failed from exc


def _answered_failure(exc: UpstreamError) -> UpstreamFailedRequest | None:
    """The instance ran the request and failed it (HTTP 5xx with ``{"error": {...}}``), or None."""
    if type(exc) is not UpstreamError or exc.status is None or exc.status < 500 or not exc.body:
        return None
    if not isinstance(_json_field(exc.body, "error"), dict):
        return None
    return UpstreamFailedRequest(exc.message, status=exc.status, body=exc.body)


def _is_rejection_or_error(exc: UpstreamError) -> bool:
    return isinstance(exc, UpstreamRejected) or exc.status is not None


def _json_field(data: bytes, key: str) -> Any:
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    return obj.get(key) if isinstance(obj, dict) else None


def _ec_transfer_params(data: bytes) -> dict[str, Any]:
    params = _json_field(data, "ec_transfer_params")
    return params if isinstance(params, dict) else {}
