"""``eccache bench proxy [--json]``: added latency and max requests/s of the proxy vs the mock PD directly.

Starts a mock PD (``python -m proxy.mock_vllm``) and a proxy (``python -m proxy``) as subprocesses, then
from this process: (1) sequential small chat requests, interleaving direct and via-proxy calls, for
latency percentiles; (2) a closed loop with ``--concurrency`` clients for ``--seconds``, direct then
via the proxy, for requests/s. Both measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

from eccache.bench.common import percentile

BODY = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Say hello in one word."}],
                   "max_tokens": 4}).encode()


@contextmanager
def _spawn(args: list[str], marker: str, timeout_s: float = 30.0) -> Iterator[str]:
    """Start a subprocess and yield the host:port from its ready line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        address = ""
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{args[:2]} exited before it was ready")
            if marker in line:
                address = line.strip().rsplit(" ", 1)[1]
                break
        if not address:
            raise RuntimeError(f"{args[:2]} not ready within {timeout_s}s")
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()




async def _one(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")


async def _latency(direct: str, proxied: str, n: int) -> tuple[list[float], list[float]]:
    d_times: list[float] = []
    p_times: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm up both paths and connection pools
            await _one(session, direct)
            await _one(session, proxied)
        for _ in range(n):
            for url, out in ((direct, d_times), (proxied, p_times)):
                t0 = time.perf_counter()
                await _one(session, url)
                out.append((time.perf_counter() - t0) * 1000)
    return d_times, p_times


async def _throughput(url: str, concurrency: int, seconds: float) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(concurrency):
            await _one(session, url)
        done = 0
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await _one(session, url)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


def run_bench(requests: int, concurrency: int, seconds: float) -> dict[str, Any]:
    with _spawn(["-m", "proxy.mock_vllm", "--role", "pd", "--port", "0"], "listening on") as pd:
        proxy_args = ["-m", "proxy", "--port", "0", "--pd", f"http://{pd}", "--probe-interval", "5"]
        with _spawn(proxy_args, "listening on") as px:
            direct = f"http://{pd}/v1/chat/completions"
            proxied = f"http://{px}/v1/chat/completions"
            d_lat, p_lat = asyncio.run(_latency(direct, proxied, requests))
            direct_rps = asyncio.run(_throughput(direct, concurrency, seconds))
            proxy_rps = asyncio.run(_throughput(proxied, concurrency, seconds))
    return {
        "added_p50_ms": round(percentile(p_lat, 50) - percentile(d_lat, 50), 3),
        "added_p99_ms": round(percentile(p_lat, 99) - percentile(d_lat, 99), 3),
        "direct_p50_ms": round(percentile(d_lat, 50), 3),
        "proxy_p50_ms": round(percentile(p_lat, 50), 3),
        "direct_p99_ms": round(percentile(d_lat, 99), 3),
        "proxy_p99_ms": round(percentile(p_lat, 99), 3),
        "proxy_rps": round(proxy_rps, 1),
        "direct_rps": round(direct_rps, 1),
        "requests": requests, "concurrency": concurrency, "seconds": seconds, "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="eccache bench proxy")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--requests", type=int, default=1000, help="sequential requests per path (latency)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    p.add_argument("--plot", metavar="FILE.png", help="also write a chart")
    args = p.parse_args(argv)
    result = run_bench(args.requests, args.concurrency, args.seconds)
    if args.plot:
        from eccache.bench.plot import plot_pairs

        groups = {"p50 ms": (result["proxy_p50_ms"], result["direct_p50_ms"]),
                  "p99 ms": (result["proxy_p99_ms"], result["direct_p99_ms"]),
                  "req/s / 1000": (result["proxy_rps"] / 1000, result["direct_rps"] / 1000)}
        result["plot"] = plot_pairs("EPD proxy vs the mock PD directly", "ms, or thousand req/s", groups,
                                    ("through the proxy", "direct"), args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
