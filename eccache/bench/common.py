"""Shared benchmark plumbing: timing, stats, output, and the services a bench starts for itself."""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from eccache.launch import RedisProcess, ServerProcess, redis_server_binary


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of ``samples``; 0.0 when there are none."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> list[float]:
    """Seconds per call of fn, after warmup calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(samples: list[float]) -> float:
    return statistics.median(samples)


@contextlib.contextmanager
def redis_for_bench(redis_url: str | None) -> Iterator[str | None]:
    """The given Redis, else a throwaway redis-server, else None (embedded store)."""
    if redis_url:
        yield redis_url
    elif redis_server_binary():
        with RedisProcess() as proc:
            yield proc.url
    else:
        yield None


@contextlib.contextmanager
def server_for_bench(redis_url: str | None, pool_size: str, transport: str = "mooncake") -> Iterator[str]:
    with ServerProcess(pool_size=pool_size, redis_url=redis_url, transport=transport) as server:
        yield server.address


def emit(result: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(result, indent=None if as_json else 2) if as_json else table(result), flush=True)
