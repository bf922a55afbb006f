"""The aiohttp application: thin handlers over ``ProxyCore``; errors mapped to HTTP at the edge.

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics,
POST|DELETE /instances (admin key), POST /v1/metaserver (layerwise call-back). Every error body is
OpenAI-style ``{"error": {"message", "type", "code"}}``; an unexpected exception is logged and answered 500
without its traceback. The two completion routes pass ``--max-concurrent`` admission first (503 when full);
health, metrics, admin and the metaserver call-back never wait on it (D's call-back must not deadlock).
Bodies are parsed with NaN/Infinity, lone surrogates and nesting deeper than ``MAX_JSON_DEPTH`` refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.balancer import Instance, Role
from proxy.cache import CacheView, open_cache
from proxy.config import ProxyConfig
from proxy.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    Overloaded,
    ProxyError,
    Unauthenticated,
    UpstreamError,
    UpstreamRejected,
)
from proxy.health import probe_all, probe_loop
from proxy.identity import TenantDirectory, constant_time_equals, load_tenant_directory
from proxy.pipeline import Prepared, ProxyCore, dumps
from proxy.routing import MAX_JSON_DEPTH, analyze_chat, analyze_completion, choose_path, json_problem

log = logging.getLogger(__name__)
CORE: web.AppKey[ProxyCore] = web.AppKey("core", ProxyCore)
_OFFLOAD_NBYTES = 1 << 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(message: str, err_type: str, code: int) -> bytes:
    return dumps({"error": {"message": message, "type": err_type, "code": code}})


def error_response(status: int, message: str, err_type: str) -> web.Response:
    return web.Response(status=status, body=error_body(message, err_type, status),
                        content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except UpstreamRejected as exc:
        # A backend refused the request (4xx): pass its answer through unchanged.
        return web.Response(status=exc.status or 400, body=exc.body or error_body(exc.message, exc.error_type, 400),
                            content_type="application/json")
    except ProxyError as exc:
        resp = error_response(exc.http_status, exc.message, exc.error_type)
        if isinstance(exc, Overloaded):
            resp.headers["Retry-After"] = "1"
        return resp
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, exc.text or "request too large", "invalid_request_error")
    except web.HTTPException as exc:
        if exc.status >= 400:
            kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
            return error_response(exc.status, exc.reason, kind)
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:  # a bug: log the traceback here, never send it to the client
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal proxy error", "internal_error")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse_json(raw: bytes) -> Any:
    """Parse a request body; BadRequest for malformed JSON, NaN/Infinity, nesting over MAX_JSON_DEPTH, or
    lone surrogates (only searched for when the body has a surrogate escape at all)."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"JSON body nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from exc
    problem = json_problem(value, check_text=_SURROGATE_ESCAPE.search(raw) is not None)
    if problem is not None:
        raise BadRequest(problem)
    return value


async def _json_body(request: web.Request) -> tuple[bytes, Any]:
    raw = await request.read()
    if len(raw) > _OFFLOAD_NBYTES:  # a big body (inline images): parse off the event loop
        return raw, await asyncio.to_thread(_parse_json, raw)
    return raw, _parse_json(raw)


def _core(request: web.Request) -> ProxyCore:
    return request.app[CORE]


def admitted(handler: Handler) -> Handler:
    """Wrap a client route with ``--max-concurrent`` admission: 503 when full; the ticket is released once,
    when the handler finishes (last byte streamed, error, client disconnect or cancellation)."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        core = _core(request)
        try:
            ticket = core.admission.enter()
        except Overloaded:
            core.metrics.overloaded.inc()
            raise
        core.metrics.in_flight.inc()
        try:
            return await handler(request)
        finally:
            if ticket.release():
                core.metrics.in_flight.dec()

    return wrapper


async def chat_completions(request: web.Request) -> web.StreamResponse:
    core = _core(request)
    raw, body = await _json_body(request)
    tenant = core.tenants.resolve(request.headers)
    req = analyze_chat(body, max_media_items=core.config.max_media_items)
    prep = await core.prepare_chat(req, raw, tenant)
    return await _respond(request, core, prep, "/v1/chat/completions", req.stream, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    core = _core(request)
    raw, body = await _json_body(request)
    core.tenants.resolve(request.headers)
    req = analyze_completion(body)
    est = core.config.estimator
    text = est.text_tokens(req.text_chars)
    out = est.output_tokens(req.body.get("max_tokens"))
    path = choose_path(has_media=False, disaggregated=core.config.disaggregated)
    payload = dumps(req.body) if req.modified else raw
    prep = Prepared(req.body, payload, None, text + out, text, path)
    return await _respond(request, core, prep, "/v1/completions", req.stream, "completions")


async def _respond(request: web.Request, core: ProxyCore, prep: Prepared, route: str, stream: bool,
                   label: str) -> web.StreamResponse:
    started = time.perf_counter()
    status = "error"
    resp: web.StreamResponse
    try:
        if not stream:
            resp = await _respond_whole(core, prep, route)
        else:
            resp = await _respond_stream(request, core, prep, route)
        status = str(resp.status)
        return resp
    except ProxyError as exc:
        status = str(exc.http_status)
        raise
    finally:
        core.metrics.requests.labels(label, prep.path.value, status).inc()
        core.metrics.latency.labels(label).observe(time.perf_counter() - started)


async def _respond_whole(core: ProxyCore, prep: Prepared, route: str) -> web.Response:
    last: UpstreamError | None = None
    for _ in range(core.config.max_attempts):
        lease, up = await core.open_final(prep, route)
        try:
            data = await up.read_rest()
        except UpstreamError as exc:  # broke before anything reached the client: try again
            last = exc
            core.metrics.retries.labels(lease.instance.role.value).inc()
            continue
        finally:
            up.close()
            lease.release()
        return web.Response(status=200, body=data, content_type=_base_type(up.content_type))
    assert last is not None
    raise UpstreamError(f"backend broke before the answer was complete: {last.message}")


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip() or "application/json"


async def _respond_stream(request: web.Request, core: ProxyCore, prep: Prepared, route: str
                          ) -> web.StreamResponse:
    lease, up = await core.open_final(prep, route)
    try:
        resp = web.StreamResponse(status=200, headers={"Content-Type": up.content_type,
                                                       "Cache-Control": "no-cache"})
        await resp.prepare(request)
        try:
            await resp.write(up.first)
            try:
                async for chunk in up.chunks():
                    await resp.write(chunk)
            except UpstreamError as exc:
                # After the first byte: no retry (the client would see duplicated text). End cleanly.
                core.metrics.midstream_failures.inc()
                log.warning("stream from %s broke after the first byte: %s", up.url, exc)
                if up.content_type.startswith("text/event-stream"):
                    event = error_body(f"upstream failed mid-stream: {exc.message}", "upstream_error", 502)
                    await resp.write(b"data: " + event + b"\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            log.info("client went away mid-stream")
        return resp
    finally:
        up.close()
        lease.release()


async def models(request: web.Request) -> web.Response:
    core = _core(request)
    core.tenants.resolve(request.headers)

    async def get(inst: Instance) -> bytes:
        status, data = await core.backends.get(inst.url, "/v1/models", timeout_s=core.config.timeouts.probe_s)
        if status != 200:
            raise UpstreamError(f"{inst.url}/v1/models: HTTP {status}", status=status)
        return data

    lease, data = await core.attempt(core.final_role, 0, get)
    lease.release()
    return web.Response(body=data, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    core = _core(request)
    report = await probe_all(core)
    needed = [Role.PREFILL, Role.DECODE] if core.config.disaggregated else [Role.PD]
    ok = all(core.balancer.pool(r).healthy_count() > 0 for r in needed)
    enc = core.balancer.pool(Role.ENCODE)
    state = "ok" if ok and (not len(enc) or enc.healthy_count()) else ("degraded" if ok else "unavailable")
    body = {"status": state, "instances": report, "eccache": core.cache.enabled,
            "active_requests": core.balancer.active_requests(), "active_tokens": core.balancer.active_tokens(),
            "in_flight": core.admission.active, "live_leases": core.balancer.live_leases()}
    return web.Response(status=200 if ok else 503, body=dumps(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    core = _core(request)
    return web.Response(body=core.metrics.render(core.balancer),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _check_admin(request: web.Request, core: ProxyCore) -> None:
    if not core.config.admin_key:
        raise Forbidden("admin API disabled (start the proxy with --admin-key)")
    given = request.headers.get("X-Admin-Key")
    auth = request.headers.get("Authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not constant_time_equals(given, core.config.admin_key):
        raise Unauthenticated("invalid admin key")


async def _instance_args(request: web.Request) -> tuple[Role, str]:
    if request.can_read_body:
        _, body = await _json_body(request)
    else:
        body = dict(request.query)
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object {role, url}")
    role_name, url = body.get("role"), body.get("url")
    try:
        role = Role(role_name)
    except ValueError:
        raise BadRequest(f"role must be one of {[r.value for r in Role]}") from None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadRequest("url must be an http(s) URL")
    return role, url.rstrip("/")


def _listing(core: ProxyCore) -> dict[str, Any]:
    return {"instances": {role.value: [{"url": i.url, "healthy": i.healthy} for i in pool.instances()]
                          for role, pool in core.balancer.pools.items()}}


async def add_instance(request: web.Request) -> web.Response:
    core = _core(request)
    _check_admin(request, core)
    role, url = await _instance_args(request)
    core.balancer.pool(role).add(url)
    return web.Response(body=dumps(_listing(core)), content_type="application/json")


async def remove_instance(request: web.Request) -> web.Response:
    core = _core(request)
    _check_admin(request, core)
    role, url = await _instance_args(request)
    if not core.balancer.pool(role).remove(url):
        raise NotFound(f"no {role.value} instance {url}")
    return web.Response(body=dumps(_listing(core)), content_type="application/json")


async def metaserver(request: web.Request) -> web.Response:
    core = _core(request)
    _, body = await _json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("metaserver body must be a JSON object")
    data = await core.metaserver(body)
    return web.Response(body=data, content_type="application/json")


def build_app(config: ProxyConfig, *, cache: CacheView | None = None, tenants: TenantDirectory | None = None,
              probes: bool = True) -> web.Application:
    """The proxy app. ``cache``/``tenants`` override what the config would build (tests)."""
    if cache is None:
        cache = open_cache(config.eccache_address, config.eccache_token, lookup_timeout_s=config.timeouts.lookup_s,
                           alias_ttl_s=config.alias_ttl_s, fixed_namespace=config.namespace)
    if tenants is None:
        tenants = load_tenant_directory(config.tenant_keys_file, uuid_secret=config.uuid_secret,
                                        tenant_header=config.tenant_header)
    core = ProxyCore(config, cache, tenants)
    app = web.Application(client_max_size=config.max_request_nbytes, middlewares=[error_middleware])
    app[CORE] = core
    app.router.add_post("/v1/chat/completions", admitted(chat_completions))
    app.router.add_post("/v1/completions", admitted(completions))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/instances", add_instance)
    app.router.add_delete("/instances", remove_instance)
    app.router.add_post("/v1/metaserver", metaserver)

    async def on_startup(app: web.Application) -> None:
        if probes:
            task = asyncio.create_task(probe_loop(core))
            core._tasks.add(task)

    async def on_cleanup(app: web.Application) -> None:
        await core.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app

