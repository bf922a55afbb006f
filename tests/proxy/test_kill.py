"""Real process kills (SIGKILL) of mock PD subprocesses, and client disconnects reaching the backend."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from proxy.balancer import HealthPolicy, Role
from proxy.cache import CacheView
from proxy.config import ProxyConfig
from proxy.server import start_proxy
from tests.proxy.helpers import chat_body, harness, run


@contextmanager
def _mock_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([sys.executable, "-m", "proxy.mock_vllm", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline and "listening on" not in line:
            line = proc.stdout.readline()
        yield proc, "http://" + line.strip().rsplit(" ", 1)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sigkilled_pd_before_and_after_first_byte() -> None:
    with _mock_process("--role", "pd", "--token-delay", "0.05") as (a, url_a), \
            _mock_process("--role", "pd", "--token-delay", "0.05") as (b, url_b):
        async def scenario() -> None:
            cfg = ProxyConfig(port=0, pd_urls=(url_a, url_b), health=HealthPolicy(eject_after=1))
            proxy = await start_proxy(cfg, cache=CacheView(None), probes=False)
            try:
                async with aiohttp.ClientSession() as http:
                    # After the first byte: kill whichever PD is streaming; the client gets a clean error.
                    async with http.post(proxy.url + "/v1/chat/completions",
                                         json=chat_body(stream=True, max_tokens=40)) as resp:
                        assert resp.status == 200
                        first = await resp.content.readline()
                        assert first.startswith(b"data: ")
                        busy = next(i for i in proxy.core.balancer.pool(Role.PD).instances()
                                    if i.active_requests)
                        victim = a if busy.url == url_a else b
                        victim.send_signal(signal.SIGKILL)
                        rest = await resp.content.read()
                    assert b'"error"' in rest and b"[DONE]" not in rest
                    # Before the first byte: the killed PD is refused, the request is retried on the other.
                    for _ in range(3):
                        async with http.post(proxy.url + "/v1/chat/completions",
                                             json=chat_body(max_tokens=3)) as resp:
                            assert resp.status == 200
                    assert proxy.core.balancer.live_leases() == 0
            finally:
                await proxy.stop()
        run(scenario())


def test_client_disconnect_cancels_the_backend_stream() -> None:
    async def scenario() -> None:
        async with harness(token_delay_s=0.05) as h:
            async with h.http.post(h.url + "/v1/chat/completions", json=chat_body(stream=True, max_tokens=100)) as r:
                await r.content.readline()
                assert h.pds[0].mock.active == 1
                r.close()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if h.pds[0].mock.active == 0 and h.proxy.core.balancer.live_leases() == 0:
                    break
            assert h.pds[0].mock.active == 0, "the PD stream must be torn down"
            assert h.pds[0].mock.counters["completed_streams"] == 0
            h.assert_idle()
    run(scenario())
