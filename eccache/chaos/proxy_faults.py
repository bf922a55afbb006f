"""Proxy faults for ``eccache chaos``: a real proxy in front of mock vLLM instances and an eccache server, all
subprocesses on loopback with free ports, under a light load, with four faults injected one after another.

- ``killed_mid_stream``: a PD instance SIGKILLed while it streams. Streams on it end with an error event
  after a correct prefix (no duplicated text, no hang), the others finish; the proxy keeps answering and
  its counters return to zero.
- ``slow_instance``: every PD stalls past ``--first-byte-timeout``: 504 ``timeout_error`` within the
  bound, counters released; a stalled encoder degrades to PD-side encoding (still correct); then serving.
- ``instance_flapping``: a PD's health flips bad/good: it is ejected and readmitted each time, clients see
  no error, and it takes traffic again at the end.
- ``eccache_down``: the eccache server SIGKILLed: every item is a miss, every answer is still correct.

Every answer under load is checked against the mock's deterministic output (the same text whether the
embedding came from the cache, the encoder or the PD); a wrong answer breaks every fault's promise.
``hostile_inputs`` runs the seeded hostile-input generator of ``proxy.hostile`` against a proxy.

Lifecycle: ``run_proxy_faults`` starts everything, returns one ``FaultResult`` per fault and stops every
process it started (also on error). It takes about 25-40 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from eccache.chaos.faults import FaultResult

MODEL = "tiny"
NAMESPACE = "ns-chaos-proxy"
_TOKEN_DELAY_S = 0.02
_FIRST_BYTE_S = 1.0
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


# ---- processes ----------------------------------------------------------------------------------------------
class _Proc:
    """A subprocess that prints ``... listening on HOST:PORT`` when ready; output drained in a thread."""

    def __init__(self, args: list[str], marker: str = "listening on", timeout_s: float = 30.0) -> None:
        self.args = args
        self.marker = marker
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""

    def start(self) -> _Proc:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MC_LOG_LEVEL": "ERROR", "ECCACHE_PROXY_UVLOOP": "0"}
        self.proc = subprocess.Popen([sys.executable, *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args[:3]} exited before it was ready")
            if self.marker in line:
                self.address = line.strip().rsplit(" ", 1)[1]
                break
        else:
            self.stop(kill=True)
            raise RuntimeError(f"{self.args[:3]} not ready within {self.timeout_s}s")
        threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True).start()
        return self

    @staticmethod
    def _drain(stream: Any) -> None:
        for _ in stream:
            pass

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def port(self) -> str:
        return self.address.rsplit(":", 1)[1]

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _mock(role: str, eccache: str, port: str = "0") -> _Proc:
    return _Proc(["-m", "proxy.mock_vllm", "--role", role, "--port", port, "--model", MODEL,
                  "--namespace", NAMESPACE, "--eccache", eccache, "--token-delay", str(_TOKEN_DELAY_S)])


@dataclass(eq=False)
class _Stack:
    eccache: Any
    encoder: _Proc
    pds: list[_Proc]
    proxy: _Proc
    procs: list[_Proc] = field(default_factory=list)


def _start_stack() -> _Stack:
    from eccache.launch import ServerProcess

    eccache = ServerProcess(transport="inline", pool_size="64MiB")
    procs: list[_Proc] = []
    try:
        encoder = _mock("encode", eccache.address).start()
        procs.append(encoder)
        pds = [_mock("pd", eccache.address).start() for _ in range(2)]
        procs += pds
        proxy = _Proc(["-m", "proxy", "--port", "0", "--encode", encoder.url, "--pd", *[p.url for p in pds],
                       "--eccache", eccache.address, "--first-byte-timeout", str(_FIRST_BYTE_S),
                       "--encode-timeout", "1.0", "--connect-timeout", "0.5", "--lookup-timeout", "0.3",
                       "--probe-interval", "0.1", "--probe-timeout", "0.5", "--eject-after", "2",
                       "--readmit-after", "1", "--max-attempts", "2", "--idle-timeout", "2"]).start()
        procs.append(proxy)
    except BaseException:
        for p in procs:
            p.stop(kill=True)
        eccache.stop(kill=True)
        raise
    return _Stack(eccache, encoder, pds, proxy, procs)


# ---- requests and the expected answers ----------------------------------------------------------------------
def _images() -> list[str]:
    from proxy.imagesize import make_png

    return ["data:image/png;base64," + base64.b64encode(make_png(28 * (1 + i % 3), 28 * (1 + i // 3), seed=i)).decode()
            for i in range(6)]


def _body(text: str, image: str | None, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}})
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "stream": stream}


def _expected(text: str, image: str | None, max_tokens: int) -> str:
    """The mock's answer: tokens derived from the prompt text and the image's embedding (proxy-independent)."""
    from blake3 import blake3

    from proxy.media import decode_data_url
    from proxy.mock_vllm import compute_embedding, output_tokens

    h = blake3(MODEL.encode())
    h.update(text.encode())
    if image is not None:
        emb, _ = compute_embedding(decode_data_url(image, 1 << 30)[1])
        h.update(emb.tobytes())
    return "".join(output_tokens(h.digest(), max_tokens))


@dataclass
class _Tally:
    ok: int = 0
    wrong: int = 0
    errors: dict[int, int] = field(default_factory=dict)

    def merge_error(self, status: int) -> None:
        self.errors[status] = self.errors.get(status, 0) + 1

    def text(self) -> str:
        return f"{self.ok} ok, {self.wrong} wrong, errors {self.errors or '{}'}"


class _Client:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.images = _images()
        self._expect: dict[tuple[str, int, int], str] = {}

    def expected(self, text: str, image_index: int, max_tokens: int) -> str:
        key = (text, image_index, max_tokens)
        if key not in self._expect:
            self._expect[key] = _expected(text, self.images[image_index] if image_index >= 0 else None, max_tokens)
        return self._expect[key]

    async def chat(self, tally: _Tally, text: str, image_index: int, max_tokens: int = 4) -> int:
        """One non-streaming request, checked against the expected answer."""
        image = self.images[image_index] if image_index >= 0 else None
        try:
            async with self.http.post(self.url + "/v1/chat/completions", json=_body(text, image, max_tokens),
                                      timeout=_HTTP_TIMEOUT) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            tally.merge_error(0)
            return 0
        if status != 200:
            tally.merge_error(status)
            return status
        content = json.loads(data)["choices"][0]["message"]["content"]
        if content == self.expected(text, image_index, max_tokens):
            tally.ok += 1
        else:
            tally.wrong += 1
        return status

    async def stream(self, text: str, image_index: int, max_tokens: int) -> tuple[int, str, bool, bool]:
        """A streamed request: (status, text received, finished with [DONE], ended with an error event)."""
        image = self.images[image_index] if image_index >= 0 else None
        got, done, errored = "", False, False
        async with self.http.post(self.url + "/v1/chat/completions", json=_body(text, image, max_tokens, True),
                                  timeout=_HTTP_TIMEOUT) as resp:
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                event = json.loads(payload)
                if "error" in event:
                    errored = True
                elif event.get("choices"):
                    got += event["choices"][0]["delta"].get("content") or ""
            return resp.status, got, done, errored

    async def get_json(self, url: str) -> Any:
        async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.json(content_type=None)

    async def post_json(self, url: str, body: Any) -> Any:
        async with self.http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            return await resp.json(content_type=None)


class _Load:
    """A light background load (2 workers: text, images, small max_tokens) that can be paused."""

    def __init__(self, client: _Client, seed: int = 6) -> None:
        self.client = client
        self.tally = _Tally()
        self.rng = random.Random(seed)
        self.running = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0

    def start(self) -> None:
        self.running.set()
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(2)]

    async def _worker(self, i: int) -> None:
        while True:
            while not self.running.is_set():  # a wake-up from a resume() that a pause() already undid
                await self.running.wait()
            self._busy += 1
            try:
                image = self.rng.randrange(-1, len(self.client.images))
                await self.client.chat(self.tally, f"load {i}", image, self.rng.randint(1, 4))
            finally:
                self._busy -= 1
            await asyncio.sleep(0.02)

    async def pause(self) -> None:
        self.running.clear()
        while self._busy:
            await asyncio.sleep(0.01)

    def resume(self) -> None:
        self.running.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _idle(client: _Client, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether the proxy's counters reach zero (no load running)."""
    deadline = time.monotonic() + timeout_s
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        report = await client.get_json(client.url + "/health")
        counts = {k: report.get(k) for k in ("active_requests", "active_tokens", "in_flight", "live_leases")}
        if not any(counts.values()):
            return True, "counters at zero"
        await asyncio.sleep(0.05)
    return False, f"counters not at zero: { {k: report.get(k) for k in ('active_requests', 'active_tokens')} }"


async def _healthy(client: _Client, url: str, want: bool, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = await client.get_json(client.url + "/health")
        states = {i["url"]: i["healthy"] for i in report["instances"].get("pd", [])}
        if states.get(url) is want:
            return True
        await asyncio.sleep(0.03)
    return False


async def _serving(client: _Client, n: int = 6) -> _Tally:
    tally = _Tally()
    for i in range(n):
        await client.chat(tally, "after", i % len(client.images) if i % 2 else -1)
    return tally


# ---- faults -------------------------------------------------------------------------------------------------
async def _killed_mid_stream(stack: _Stack, client: _Client, load: _Load, window_s: float) -> FaultResult:
    name = "proxy: instance killed mid-stream"
    await asyncio.sleep(window_s / 2)
    await load.pause()
    victim = stack.pds[0]
    max_tokens = 60  # ~1.2 s per stream at the mock's token delay
    streams = [asyncio.create_task(client.stream(f"stream {i}", i % 3 - 1, max_tokens)) for i in range(4)]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        counters = await client.get_json(victim.url + "/counters")
        if counters.get("active", 0) > 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.15)  # let some tokens flow first
    victim.stop(kill=True)
    try:
        outcomes = await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True), 10)
    except asyncio.TimeoutError:
        return FaultResult(name, False, "a stream hung after the instance was killed")
    cut = complete = bad = 0
    for i, out in enumerate(outcomes):
        if isinstance(out, BaseException):
            bad += 1
            continue
        status, got, done, errored = out
        want = client.expected(f"stream {i}", i % 3 - 1, max_tokens)
        if status == 200 and done and not errored and got == want:
            complete += 1
        elif status == 200 and errored and not done and want.startswith(got) and len(got) < len(want):
            cut += 1
        else:
            bad += 1
    load.resume()
    after = await _serving(client)
    await load.pause()
    idle, idle_text = await _idle(client)
    victim.args[victim.args.index("--port") + 1] = victim.port  # come back on the same port
    restarted = await asyncio.to_thread(victim.start)
    readmitted = await _healthy(client, restarted.url, True)
    load.resume()
    held = cut >= 1 and bad == 0 and after.ok == 6 and after.wrong == 0 and idle and readmitted
    return FaultResult(name, held, f"4 streams: {cut} cut with an error event after a correct prefix, {complete} "
                                   f"complete, {bad} bad; afterwards {after.text()}; {idle_text}; "
                                   f"restarted instance readmitted: {readmitted}")


async def _slow_instance(stack: _Stack, client: _Client, load: _Load, window_s: float) -> FaultResult:
    name = "proxy: slow instance (timeouts)"
    await load.pause()
    for pd in stack.pds:
        await client.post_json(pd.url + "/control", {"delay_s": 3.0, "delay_s_count": 2})
    t0 = time.monotonic()
    tally = _Tally()
    statuses = await asyncio.gather(*(client.chat(tally, f"slow {i}", -1) for i in range(2)))
    elapsed = time.monotonic() - t0
    bound = 2 * _FIRST_BYTE_S + 1.0  # two attempts, then 504
    idle, idle_text = await _idle(client)
    back = all([await _healthy(client, pd.url, True) for pd in stack.pds])
    await client.post_json(stack.encoder.url + "/control", {"delay_s": 3.0, "delay_s_count": 1})
    enc = _Tally()
    await client.chat(enc, "slow encoder", 5)  # encoder too slow: the PD gets the media
    load.resume()
    await asyncio.sleep(window_s / 2)
    after = await _serving(client)
    held = (statuses == [504, 504] and elapsed <= bound and idle and back and enc.ok == 1
            and after.ok == 6 and after.wrong == 0)
    return FaultResult(name, held, f"stalled PDs: statuses {statuses} in {elapsed:.1f}s (bound {bound:.1f}s); "
                                   f"{idle_text}; slow encoder: {enc.text()}; afterwards {after.text()}")


async def _flapping(stack: _Stack, client: _Client, load: _Load, window_s: float) -> FaultResult:
    name = "proxy: instance flapping (eject/readmit)"
    flapper = stack.pds[1]
    before = load.tally.ok, load.tally.wrong, dict(load.tally.errors)
    ejected = readmitted = 0
    flips = 3
    for _ in range(flips):
        await client.post_json(flapper.url + "/control", {"healthy": False})
        ejected += await _healthy(client, flapper.url, False)
        await asyncio.sleep(window_s / (2 * flips))
        await client.post_json(flapper.url + "/control", {"healthy": True})
        readmitted += await _healthy(client, flapper.url, True)
        await asyncio.sleep(window_s / (2 * flips))
    served_before = (await client.get_json(flapper.url + "/counters")).get("requests", 0)
    after = await _serving(client, 8)
    served_after = (await client.get_json(flapper.url + "/counters")).get("requests", 0)
    errors = {k: v - before[2].get(k, 0) for k, v in load.tally.errors.items() if v != before[2].get(k, 0)}
    ok = load.tally.ok - before[0]
    wrong = load.tally.wrong - before[1]
    held = (ejected == flips and readmitted == flips and not errors and wrong == 0 and after.ok == 8
            and served_after > served_before)
    return FaultResult(name, held, f"{flips} flips: ejected {ejected}, readmitted {readmitted}; load during it "
                                   f"{ok} ok, {wrong} wrong, errors {errors or '{}'}; after the last readmission it "
                                   f"served {served_after - served_before} requests again")


async def _eccache_down(stack: _Stack, client: _Client, load: _Load, window_s: float) -> FaultResult:
    name = "proxy: eccache down (all-miss)"
    await load.pause()
    warm = _Tally()
    await client.chat(warm, "warm check", 4)  # cold or warm, depending on the load so far
    enc0 = (await client.get_json(stack.encoder.url + "/counters")).get("requests", 0)
    await client.chat(warm, "warm check", 4)  # warm now: no encoder call
    enc1 = (await client.get_json(stack.encoder.url + "/counters")).get("requests", 0)
    await asyncio.to_thread(stack.eccache.stop, True)
    before = load.tally.ok, load.tally.wrong, dict(load.tally.errors)
    load.resume()
    down = _Tally()
    t0 = time.monotonic()
    for i in range(len(client.images)):
        await client.chat(down, "cache down", i)  # every image was cached before
    slowest = time.monotonic() - t0
    enc2 = (await client.get_json(stack.encoder.url + "/counters")).get("requests", 0)
    await asyncio.sleep(window_s / 2)
    await load.pause()
    errors = {k: v - before[2].get(k, 0) for k, v in load.tally.errors.items() if v != before[2].get(k, 0)}
    wrong = load.tally.wrong - before[1]
    idle, idle_text = await _idle(client)
    held = (warm.ok == 2 and enc1 == enc0 and down.ok == len(client.images) and down.wrong == 0
            and enc2 > enc1 and not errors and wrong == 0 and idle)
    return FaultResult(name, held, f"before: a cached image was warm (encoder calls +{enc1 - enc0}); "
                                   f"eccache SIGKILLed: {down.text()} over {len(client.images)} formerly cached "
                                   f"images in {slowest:.1f}s (all-miss: encoder calls +{enc2 - enc1}), load "
                                   f"{load.tally.ok - before[0]} ok, {wrong} wrong, errors {errors or '{}'}; "
                                   f"{idle_text}")


async def _run(duration_s: float) -> list[FaultResult]:
    window = min(6.0, max(0.5, duration_s / 8))
    stack = await asyncio.to_thread(_start_stack)
    results: list[FaultResult] = []
    try:
        async with aiohttp.ClientSession() as http:
            client = _Client(http, stack.proxy.url)
            await asyncio.to_thread(lambda: [client.expected(f"load {i}", j, n) for i in range(2)
                                             for j in range(-1, 6) for n in range(1, 5)])
            load = _Load(client)
            load.start()
            await asyncio.sleep(window)
            for fault in (_killed_mid_stream, _slow_instance, _flapping, _eccache_down):
                try:
                    results.append(await fault(stack, client, load, window))
                except Exception as exc:  # noqa: BLE001 - a broken fault is reported, not raised
                    results.append(FaultResult(f"proxy: {fault.__name__.strip('_').replace('_', ' ')}", False,
                                               f"fault raised {exc!r}"))
                load.resume()
            await load.stop()
            if load.tally.wrong:
                results = [FaultResult(r.name, False, r.detail + f"; {load.tally.wrong} wrong answers under load")
                           for r in results]
    finally:
        for proc in stack.procs:
            proc.stop(kill=True)
        with contextlib.suppress(Exception):
            stack.eccache.stop(kill=True)
    return results


def run_proxy_faults(duration_s: float) -> list[FaultResult]:
    """Start eccache + mock instances + a proxy (subprocesses, loopback), keep a light load on, inject the
    four proxy faults and say for each whether its promise held. Takes about 25-40 s whatever
    ``duration_s`` (which only stretches the load windows between faults, up to 6 s each)."""
    return asyncio.run(_run(duration_s))


def hostile_inputs(n: int) -> tuple[int, int]:
    """Send ``n`` seeded random hostile requests through a real proxy; returns (tried, answered precisely)."""
    from proxy.hostile import run_hostile

    tried, precise, _ = run_hostile(n)
    return tried, precise
