"""Fixtures shared by every test folder: a real redis-server and real eccache servers.

A missing binary or package skips with a reason on a laptop, and fails when CI is set: CI installs
everything, so a skip there would hide a broken install.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from eccache.launch import RedisProcess, ServerProcess, redis_server_binary
from eccache.transport import mooncake

IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    require(redis_server_binary() is not None, "redis-server is not installed")
    with RedisProcess() as proc:
        yield proc


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    """A real Redis, flushed before each test."""
    import redis

    redis.Redis.from_url(redis_proc.url).flushall()
    return redis_proc.url


@pytest.fixture
def needs_mooncake() -> None:
    require(mooncake.available(), "mooncake-transfer-engine-non-cuda (and libibverbs1) not installed")


@pytest.fixture
def server_factory(redis_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Starts `eccache serve` subprocesses on the test's Redis; all are stopped at teardown."""
    started: list[ServerProcess] = []

    def start(transport: str = "mooncake", pool_size: str = "256MiB", extra: tuple[str, ...] = (),
              use_redis: bool = True, **kw: object) -> ServerProcess:
        if transport == "mooncake":
            require(mooncake.available(), "mooncake transfer engine not installed")
        proc = ServerProcess(pool_size=pool_size, redis_url=redis_url if use_redis else None,
                             transport=transport, extra=extra, **kw)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(kill=True)


@pytest.fixture
def eccache_server(server_factory: Callable[..., ServerProcess]) -> str:
    """A real server (inline transport, real Redis); yields "host:port"."""
    return server_factory(transport="inline").address


@pytest.fixture
def mooncake_server(server_factory: Callable[..., ServerProcess]) -> str:
    """A real server offering Mooncake over TCP (and inline), real Redis; yields "host:port"."""
    return server_factory(transport="mooncake").address
