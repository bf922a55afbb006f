"""The comparison shared by ``eccache demo`` and ``eccache bench e2e``: one trace, without then with eccache.

``run_e2e`` starts a stack (or uses a given one), measures the encoder directly (``encoder_ms_p50``), drives
the trace through the proxy without the cache (every image encodes), then through the proxy with it, and
returns one dictionary (the ``eccache bench e2e --json`` contract plus details).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from eccache.bench.common import percentile
from eccache.sim.stack import MODEL, Stack, start_mock_stack, start_vllm_stack
from eccache.sim.workload import MOCK_SIZES, VLLM_SIZES, Outcome, drive, make_trace, request_body, warm_up

Progress = Callable[[str, int, int], None]
MODES = ("nocache", "cache")


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url) as resp:
            return dict(await resp.json(content_type=None)) if resp.status == 200 else None
    except (aiohttp.ClientError, ValueError, asyncio.TimeoutError):
        return None


async def _proxy_counters(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """Media-item outcomes and encoder calls of one proxy, from its Prometheus ``/metrics``."""
    out: dict[str, float] = {}
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "eccache_proxy_media_items_total":
                out["items_" + sample.labels["outcome"]] = sample.value
            elif sample.name == "eccache_proxy_encoder_calls_total":
                out["encoder_calls_" + sample.labels["result"]] = sample.value
            elif sample.name == "eccache_proxy_metadata_fallbacks_total":
                out["metadata_fallbacks"] = sample.value
    return out


async def _instance_counters(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, int] | None:
    """Sum of the mock instances' ``/counters`` (None for real vLLM instances, which have none)."""
    total: dict[str, int] = {}
    for url in urls:
        got = await _get_json(session, url + "/counters")
        if got is None:
            return None
        for key, value in got.items():
            if key != "active" and isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


async def _reset_counters(session: aiohttp.ClientSession, urls: list[str]) -> None:
    for url in urls:
        try:
            async with session.post(url + "/counters/reset") as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass


async def _encoder_ms(stack: Stack, sizes: list[int], reps: int = 3) -> dict[int, float]:
    """Median time of one encoder request per image size, sent straight to an encoder with fresh images."""
    url = stack.encoders[0] + "/v1/chat/completions"
    out: dict[int, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for size in sizes:
            times: list[float] = []
            for rep in range(reps + 1):  # the first one warms up
                seed = 900_000_000 + size * 100 + rep + int(time.time_ns() % 1_000_000) * 1000
                body = json.loads(request_body(make_trace(1, 0.0, sizes=[size], text_fraction=0.0,
                                                          seed_base=seed)[0], model=MODEL, max_tokens=1))
                body["stream"] = False
                body["messages"][0]["content"][0]["uuid"] = f"calibration-{seed}"
                t0 = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"encoder calibration failed: HTTP {resp.status}")
                if rep:
                    times.append((time.perf_counter() - t0) * 1000)
            out[size] = statistics.median(times)
    return out


def _bind(progress: Progress | None, mode: str) -> Callable[[int, int], None] | None:
    """``progress`` with its run name filled in."""
    if progress is None:
        return None
    report = progress

    def bound(done: int, total: int) -> None:
        report(mode, done, total)
    return bound


def _summary(outcomes: list[Outcome], wall_s: float) -> dict[str, Any]:
    ttfts = [o.ttft_s * 1000 for o in outcomes if o.ttft_s is not None]
    ok = len(ttfts)
    errors = [o for o in outcomes if o.ttft_s is None]
    return {"ok": ok, "errors": len(errors), "first_error": errors[0].error if errors else "",
            "ttft_p50_ms": round(percentile(ttfts, 50), 3) if ttfts else None,
            "ttft_p99_ms": round(percentile(ttfts, 99), 3) if ttfts else None,
            "throughput_rps": round(ok / wall_s, 2) if wall_s > 0 else 0.0, "wall_s": round(wall_s, 3)}


async def _measure(stack: Stack, n: int, reuse: float, concurrency: int, sizes: tuple[int, ...],
                   max_tokens: int, seed: int, progress: Progress | None) -> dict[str, Any]:
    trace = make_trace(n, reuse, sizes=sizes, seed=seed, seed_base=seed * 1_000_000)
    bodies = [request_body(item, model=MODEL, max_tokens=max_tokens) for item in trace]
    image_items = [t for t in trace if t.size]
    for k, base in enumerate((stack.proxy_nocache, stack.proxy_cache)):
        await warm_up(base, MODEL, images=4 * (len(stack.encoders) + len(stack.pds)),
                      size=min(sizes), seed=800_000_000 + 1000 * k + seed * 10_000)
    enc_by_size = await _encoder_ms(stack, sorted({t.size for t in image_items}) or [sizes[0]])
    enc_per_request = [enc_by_size[t.size] for t in image_items]
    instances = stack.encoders + stack.pds
    runs: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for mode in MODES:
            base = stack.proxy_cache if mode == "cache" else stack.proxy_nocache
            await _reset_counters(session, instances)
            before = await _proxy_counters(session, base)
            outcomes, wall = await drive(base, bodies, concurrency=concurrency, progress=_bind(progress, mode))
            after = await _proxy_counters(session, base)
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            summary = _summary(outcomes, wall)
            warm, cold = delta.get("items_warm", 0.0), delta.get("items_cold", 0.0)
            summary["hit_rate"] = round(warm / (warm + cold), 4) if warm + cold else 0.0
            summary["proxy"] = {k: int(v) for k, v in sorted(delta.items())}
            summary["encoders"] = await _instance_counters(session, stack.encoders)
            summary["pds"] = await _instance_counters(session, stack.pds)
            runs[mode] = summary
    return {"trace": trace, "runs": runs, "encoder_ms_by_size": enc_by_size,
            "encoder_ms": enc_per_request}


def run_e2e(*, requests: int = 120, reuse: float = 0.5, concurrency: int = 4, encoders: int = 2, pds: int = 2,
            real_vllm: bool = False, max_tokens: int = 8, seed: int = 1, transport: str | None = None,
            progress: Progress | None = None, on_stack: Callable[[Stack], None] | None = None,
            stack: Stack | None = None) -> dict[str, Any]:
    """Run the whole comparison and return the result dictionary (starting and stopping a stack if none given)."""
    own = stack is None
    if stack is None:
        stack = (start_vllm_stack(transport=transport) if real_vllm else
                 start_mock_stack(encoders=encoders, pds=pds, transport=transport))
    try:
        if on_stack is not None:
            on_stack(stack)
        sizes = VLLM_SIZES if stack.backend == "vllm" else MOCK_SIZES
        measured = asyncio.run(_measure(stack, requests, reuse, concurrency, sizes, max_tokens, seed, progress))
    finally:
        if own:
            stack.close()
    return _result(stack, measured, requests=requests, reuse=reuse, concurrency=concurrency)


def _result(stack: Stack, measured: dict[str, Any], *, requests: int, reuse: float,
            concurrency: int) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = measured["runs"]
    trace = measured["trace"]
    enc_ms: list[float] = measured["encoder_ms"]
    image_requests = sum(1 for t in trace if t.size)

    def pair(key: str) -> dict[str, Any]:
        return {mode: runs[mode][key] for mode in ("cache", "nocache")}

    encoder_ms_p50 = round(statistics.median(enc_ms), 3) if enc_ms else 0.0
    encoder_ms_mean = statistics.fmean(enc_ms) if enc_ms else 0.0
    encoded = {m: runs[m]["proxy"].get("items_encoded", 0) for m in MODES}
    calls = {m: runs[m]["proxy"].get("encoder_calls_ok", 0) for m in MODES}
    # encoder time the cache saved, spread over every request of the trace (what a median request gains)
    saved_per_request = (encoded["nocache"] - encoded["cache"]) * encoder_ms_mean / max(1, requests)
    p50 = pair("ttft_p50_ms")
    gain = (p50["nocache"] - p50["cache"]) if None not in p50.values() else None
    return {
        "hit_rate": pair("hit_rate"),
        "ttft_p50_ms": p50,
        "ttft_p99_ms": pair("ttft_p99_ms"),
        "throughput_rps": pair("throughput_rps"),
        "encoder_ms_p50": encoder_ms_p50,
        "encoder_ms_by_size": {str(k): round(v, 3) for k, v in measured["encoder_ms_by_size"].items()},
        "encoder_calls": {"cache": calls["cache"], "nocache": calls["nocache"]},
        "encoded_items": {"cache": encoded["cache"], "nocache": encoded["nocache"]},
        "errors": pair("errors"),
        "target": {
            "ttft_p50_gain_ms": round(gain, 3) if gain is not None else None,
            "encoder_ms_saved_per_request": round(saved_per_request, 3),
            "met": bool(gain is not None and gain >= saved_per_request),
        },
        "runs": runs,
        "requests": requests, "image_requests": image_requests, "text_requests": len(trace) - image_requests,
        "reused_image_requests": sum(1 for t in trace if t.reused),
        "reuse": reuse, "concurrency": concurrency, "image_sizes": sorted({t.size for t in trace if t.size}),
        "stack": stack.describe(), "stopped_cleanly": stack.stopped_cleanly,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
