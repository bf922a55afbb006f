"""The workload: a trace with a given image-reuse ratio, and an asyncio driver that measures TTFT.

TTFT is the time from sending a request to the first streamed token (the first ``data:`` event with
choices; OpenAI servers send one per generated token) through the proxy's OpenAI API with ``stream=true``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from eccache.sim.images import png_data_url

MOCK_SIZES: tuple[int, ...] = (512, 1024, 1536, 2048)   # square images; the mock encoder's cost grows with pixels
VLLM_SIZES: tuple[int, ...] = (56, 64, 112)              # the tiny real model resizes to <= 16 image tokens
PROMPTS = ("Describe this image.", "What is in this picture?", "Summarize the image in one sentence.")
TEXT_PROMPTS = ("Say hello in one word.", "What is the capital of France?", "Count to five.")


@dataclass(frozen=True, slots=True)
class TraceItem:
    """One request: an image (size, seed) or text only (``size`` 0); ``reused`` when the image was seen."""

    size: int
    seed: int
    reused: bool
    prompt: str


def make_trace(n: int, reuse: float, *, sizes: Sequence[int] = MOCK_SIZES, text_fraction: float = 0.2,
               seed: int = 0, seed_base: int = 0) -> list[TraceItem]:
    """``n`` requests; a ``text_fraction`` share is text-only; an image request repeats an earlier image with
    probability ``reuse`` (uniformly among those seen), else brings a new one of a random size."""
    if not 0.0 <= reuse <= 1.0 or not 0.0 <= text_fraction <= 1.0:
        raise ValueError("reuse and text_fraction must be within [0, 1]")
    rng = random.Random(seed)
    seen: list[tuple[int, int]] = []
    out: list[TraceItem] = []
    for i in range(n):
        if rng.random() < text_fraction:
            out.append(TraceItem(0, 0, False, rng.choice(TEXT_PROMPTS)))
            continue
        if seen and rng.random() < reuse:
            size, img = rng.choice(seen)
            out.append(TraceItem(size, img, True, rng.choice(PROMPTS)))
        else:
            size, img = rng.choice(list(sizes)), seed_base + i
            seen.append((size, img))
            out.append(TraceItem(size, img, False, rng.choice(PROMPTS)))
    return out


def request_body(item: TraceItem, *, model: str, max_tokens: int) -> bytes:
    """The OpenAI chat-completions body of one trace item (streamed, greedy)."""
    content: str | list[dict[str, object]]
    if item.size:
        content = [{"type": "image_url", "image_url": {"url": png_data_url(item.size, item.size, item.seed)}},
                   {"type": "text", "text": item.prompt}]
    else:
        content = item.prompt
    return json.dumps({"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                       "messages": [{"role": "user", "content": content}]}).encode()


@dataclass(slots=True)
class Outcome:
    """What one request saw: HTTP status, TTFT and total latency in seconds (None when it failed)."""

    status: int
    ttft_s: float | None
    total_s: float
    error: str = ""


async def _one(session: aiohttp.ClientSession, url: str, body: bytes) -> Outcome:
    t0 = time.perf_counter()
    ttft: float | None = None
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                text = (await resp.read()).decode(errors="replace")[:300]
                return Outcome(resp.status, None, time.perf_counter() - t0, text)
            last = b""
            async for raw in resp.content:
                line = raw.strip()
                if line:
                    last = line
                if ttft is None and line.startswith(b"data:") and line != b"data: [DONE]":
                    event = json.loads(line[5:])
                    # the first event with choices: an OpenAI server streams one per generated token (vLLM's
                    # first carries the role, after the first token; a special token's text can be empty)
                    if event.get("choices"):
                        ttft = time.perf_counter() - t0
        if ttft is None:
            return Outcome(200, None, time.perf_counter() - t0,
                           "stream carried no token; last event: " + last.decode(errors="replace")[:300])
        return Outcome(200, ttft, time.perf_counter() - t0)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return Outcome(0, None, time.perf_counter() - t0, repr(exc))


async def drive(base_url: str, bodies: Sequence[bytes], *, concurrency: int,
                progress: Callable[[int, int], None] | None = None,
                timeout_s: float = 120.0) -> tuple[list[Outcome], float]:
    """Send every body through ``base_url`` with ``concurrency`` closed-loop clients, in trace order.

    Returns the outcomes (trace order) and the wall time of the whole run in seconds.
    """
    url = base_url.rstrip("/") + "/v1/chat/completions"
    outcomes: list[Outcome | None] = [None] * len(bodies)
    next_index = 0
    done = 0
    connector = aiohttp.TCPConnector(limit=max(1, concurrency))
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_index, done
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                outcomes[i] = await _one(session, url, bodies[i])
                done += 1
                if progress is not None:
                    progress(done, len(bodies))

        if progress is not None:
            progress(0, len(bodies))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        wall = time.perf_counter() - t0
    return [o for o in outcomes if o is not None], wall


async def warm_up(base_url: str, model: str, *, images: int = 8, size: int = 64, seed: int = 0) -> None:
    """Text-only requests, then ``images`` distinct small images (never in a trace): connection pools, the
    proxy's alias lookup, the data-plane connections of every instance, lazy imports."""
    text = request_body(TraceItem(0, 0, False, TEXT_PROMPTS[0]), model=model, max_tokens=2)
    await drive(base_url, [text] * 4, concurrency=2)
    bodies = [request_body(TraceItem(size, seed + i, False, PROMPTS[0]), model=model, max_tokens=2)
              for i in range(images)]
    await drive(base_url, bodies, concurrency=2)
