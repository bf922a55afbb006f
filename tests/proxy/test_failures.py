"""Failures: killed encoder / PD before and after the first byte, dead instances, counters back to zero."""

from __future__ import annotations

import asyncio
import random

import openai
import pytest

from proxy.balancer import HealthPolicy, Role
from proxy.cache import CacheView
from proxy.memstore import AsyncMemoryBackend, MemoryStore
from tests.proxy.helpers import chat_body, harness, png_data_url, run


def test_killed_encoder_mid_request_pd_gets_raw_media() -> None:
    async def scenario() -> None:
        async with harness(encoders=1, encode_attempts=1) as h:
            h.encoders[0].mock.faults.update({"die_before_first_byte": True})
            status, body = await h.chat(chat_body(images=(png_data_url(seed=11),)))
            assert status == 200, body
            assert h.encoders[0].mock.counters["crashes"] == 1
            assert h.pds[0].mock.counters["local_encodes"] == 1
            assert h.pds[0].mock.counters["metadata_only_parts"] == 0
            h.assert_idle()
    run(scenario())


def test_failed_encoder_is_retried_on_another_encoder() -> None:
    async def scenario() -> None:
        async with harness(encoders=2) as h:
            for e in h.encoders:
                e.mock.faults.update({"fail_status": 500})
            # both fail once; the proxy tries 2 encoders then gives PD the media
            status, _ = await h.chat(chat_body(images=(png_data_url(seed=12),)))
            assert status == 200
            assert sum(e.mock.counters["requests"] for e in h.encoders) == 2
            status, _ = await h.chat(chat_body(images=(png_data_url(seed=13),)))
            assert status == 200
            assert sum(e.mock.counters["encoded_items"] for e in h.encoders) == 1
            h.assert_idle()
    run(scenario())


def test_stopped_encoder_server_degrades_to_local_encoding() -> None:
    async def scenario() -> None:
        async with harness(encoders=1) as h:
            await h.encoders[0].stop()
            status, _ = await h.chat(chat_body(images=(png_data_url(seed=14),)))
            assert status == 200
            assert h.pds[0].mock.counters["local_encodes"] == 1
            h.assert_idle()
    run(scenario())


@pytest.mark.parametrize("stream", [False, True])
def test_pd_killed_before_first_byte_is_retried_on_another_pd(stream: bool) -> None:
    async def scenario() -> None:
        async with harness(pds=2) as h:
            h.pds[0].mock.faults.update({"die_before_first_byte": True})
            if stream:
                status, text, raw = await h.stream_text(chat_body(max_tokens=6))
                assert status == 200 and len(text.split()) == 6
                assert raw.count(b"[DONE]") == 1
            else:
                status, body = await h.chat(chat_body(max_tokens=6))
                assert status == 200 and len(body["choices"][0]["message"]["content"].split()) == 6
            if stream:
                status, text, _ = await h.stream_text(chat_body(max_tokens=6))
            else:
                status, _ = await h.chat(chat_body(max_tokens=6))
            assert status == 200
            assert h.pds[0].mock.counters["crashes"] == 1  # one of the two requests hit the crash...
            assert h.proxy.core.metrics.retries.labels("pd")._value.get() == 1  # ...and was retried
            h.assert_idle()
    run(scenario())


def test_pd_dead_before_first_byte_retry_reaches_other_pd() -> None:
    async def scenario() -> None:
        async with harness(pds=2) as h:
            await h.pds[0].stop()
            for _ in range(4):
                status, _ = await h.chat(chat_body())
                assert status == 200
            assert h.pds[1].mock.counters["requests"] == 4
            inst = h.proxy.core.balancer.pool(Role.PD).get(h.pds[0].url)
            assert inst is not None and not inst.healthy  # ejected after 2 failures
            h.assert_idle()
    run(scenario())


def test_pd_killed_after_first_byte_gives_clean_error_without_duplicate_text() -> None:
    async def scenario() -> None:
        async with harness(pds=2) as h:
            for p in h.pds:
                p.mock.faults.update({"die_after_chunks": 3})
            status, text, raw = await h.stream_text(chat_body(max_tokens=10))
            assert status == 200
            assert len(text.split()) == 3, "only the 3 tokens sent before the crash, never repeated"
            assert b'"error"' in raw and b"[DONE]" not in raw
            assert sum(p.mock.counters["requests"] for p in h.pds) == 1, "no retry after the first byte"
            h.assert_idle()
    run(scenario())


def test_openai_client_streams_through_the_proxy_and_sees_midstream_errors() -> None:
    async def scenario() -> None:
        async with harness() as h:
            client = openai.AsyncOpenAI(base_url=h.url + "/v1", api_key="none", max_retries=0)
            stream = await client.chat.completions.create(
                model="tiny", stream=True, max_tokens=7,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": png_data_url(seed=21)}}]}])
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert len("".join(pieces).split()) == 7
            h.pds[0].mock.faults.update({"die_after_chunks": 2})
            stream = await client.chat.completions.create(
                model="tiny", stream=True, max_tokens=7, messages=[{"role": "user", "content": "hi"}])
            got: list[str] = []
            with pytest.raises(openai.APIError):
                async for c in stream:
                    if c.choices:
                        got.append(c.choices[0].delta.content or "")
            assert len("".join(got).split()) == 2
            await client.close()
            h.assert_idle()
    run(scenario())


def test_metadata_only_request_refused_by_pd_is_resent_with_media() -> None:
    async def scenario() -> None:
        proxy_store, pd_store = MemoryStore(), MemoryStore()
        cache = CacheView(AsyncMemoryBackend(proxy_store))
        async with harness(store=proxy_store, cache=cache, pd_store=pd_store) as h:
            img = png_data_url(seed=31)
            await h.chat(chat_body(images=(img,)))  # encoder writes to proxy_store; PD can't see it
            status, body = await h.chat(chat_body(images=(img,)))
            assert status == 200, body
            pd = h.pds[0].mock.counters
            assert pd["metadata_only_misses"] == 2 and pd["local_encodes"] == 2
            assert h.proxy.core.metrics.metadata_fallbacks._value.get() == 2
            h.assert_idle()
    run(scenario())


@pytest.mark.parametrize("pd_topology", ["pd", "p_d"])
def test_metadata_only_failure_is_not_retried_elsewhere_nor_ejects(pd_topology: str) -> None:
    """A PD (or P) answering HTTP 500 for a metadata-only request could not load the embedding: it is not
    broken. Trying other instances would fail the same way and eject healthy ones."""
    async def scenario() -> None:
        proxy_store, pd_store = MemoryStore(), MemoryStore()
        cache = CacheView(AsyncMemoryBackend(proxy_store))
        shape = {"pds": 2} if pd_topology == "pd" else {"pds": 0, "prefills": 2, "decodes": 1}
        async with harness(store=proxy_store, cache=cache, pd_store=pd_store,
                           health=HealthPolicy(eject_after=1, readmit_after=1), **shape) as h:
            loaders = h.pds if pd_topology == "pd" else h.prefills
            for seed in (41, 42, 43):
                status, body = await h.chat(chat_body(images=(png_data_url(seed=seed),)))
                assert status == 200, body
            assert sum(m.mock.counters["metadata_only_misses"] for m in loaders) == 3
            assert sum(m.mock.counters["local_encodes"] for m in loaders) == 3
            assert h.counters(loaders) == 6  # one refusal and one re-send per request, nothing more
            assert h.proxy.core.metrics.metadata_fallbacks._value.get() == 3
            role = Role.PD if pd_topology == "pd" else Role.PREFILL
            assert h.proxy.core.balancer.pool(role).healthy_count() == 2
            h.assert_idle()
    run(scenario())


def test_streamed_metadata_only_request_failed_by_pd_is_resent_with_media() -> None:
    """vLLM fails it after HTTP 200 and the role chunk: the proxy holds those, so the client never sees it."""
    async def scenario() -> None:
        proxy_store, pd_store = MemoryStore(), MemoryStore()
        cache = CacheView(AsyncMemoryBackend(proxy_store))
        async with harness(store=proxy_store, cache=cache, pd_store=pd_store) as h:
            img = png_data_url(seed=32)
            status, whole = await h.chat(chat_body(images=(img,)))  # the encoder publishes where PD can't see
            assert status == 200, whole
            status, text, raw = await h.stream_text(chat_body(images=(img,)))
            assert status == 200, raw
            assert text == whole["choices"][0]["message"]["content"] and b"error" not in raw
            assert raw.count(b'"role"') == 1  # the refused stream's opening never reached the client
            pd = h.pds[0].mock.counters
            assert pd["metadata_only_misses"] == 2 and pd["local_encodes"] == 2
            assert h.proxy.core.metrics.metadata_fallbacks._value.get() == 2
            h.assert_idle()
    run(scenario())


def test_stream_failed_before_any_output_is_a_precise_error_and_keeps_the_instance() -> None:
    async def scenario() -> None:
        async with harness(pds=1) as h:
            h.pds[0].mock.faults.update({"generation_error": True})
            status, text, raw = await h.stream_text(chat_body())
            assert status == 502 and text == ""
            assert b"failed the request before any output: Internal server error" in raw
            assert h.pds[0].mock.counters["requests"] == 1  # not retried: the instance answered
            status, text, _ = await h.stream_text(chat_body())
            assert status == 200 and text  # and it was not ejected
            h.assert_idle()
    run(scenario())


def test_health_probes_eject_and_readmit() -> None:
    async def scenario() -> None:
        async with harness(pds=2, probes=True, probe_interval_s=0.05,
                           health=HealthPolicy(eject_after=2, readmit_after=1)) as h:
            pool = h.proxy.core.balancer.pool(Role.PD)
            h.pds[0].mock.faults.update({"healthy": False})
            for _ in range(100):
                await asyncio.sleep(0.02)
                if not pool.get(h.pds[0].url).healthy:  # type: ignore[union-attr]
                    break
            assert not pool.get(h.pds[0].url).healthy  # type: ignore[union-attr]
            for _ in range(4):
                assert (await h.chat(chat_body()))[0] == 200
            assert h.pds[0].mock.counters["requests"] == 0
            async with h.http.get(h.url + "/health") as resp:
                report = await resp.json()
            assert resp.status == 200
            assert {i["url"]: i["healthy"] for i in report["instances"]["pd"]}[h.pds[0].url] is False
            h.pds[0].mock.faults.update({"healthy": True})
            for _ in range(100):
                await asyncio.sleep(0.02)
                if pool.get(h.pds[0].url).healthy:  # type: ignore[union-attr]
                    break
            assert pool.get(h.pds[0].url).healthy  # type: ignore[union-attr]
    run(scenario())


def test_health_is_503_when_no_pd_is_healthy() -> None:
    async def scenario() -> None:
        async with harness(pds=1, health=HealthPolicy(eject_after=1)) as h:
            await h.pds[0].stop()
            async with h.http.get(h.url + "/health") as resp:
                assert resp.status == 503
            status, body = await h.chat(chat_body())
            assert status in (502, 503) and "error" in body
            h.assert_idle()
    run(scenario())


def test_counters_return_to_zero_after_mixed_load_with_disconnects_and_failures() -> None:
    async def scenario() -> None:
        rng = random.Random(7)
        async with harness(encoders=2, pds=3, token_delay_s=0.002) as h:
            imgs = [png_data_url(32 + 8 * i, 48, seed=i) for i in range(5)]
            h.pds[2].mock.faults.update({"die_after_chunks": 2, "die_after_chunks_count": 3})
            h.encoders[1].mock.faults.update({"fail_status": 503, "fail_status_count": 2})

            async def one(i: int) -> None:
                kind = rng.choice(["text", "image", "stream", "disconnect", "cancel"])
                body = chat_body(images=(rng.choice(imgs),) if kind != "text" else (), max_tokens=12)
                if kind == "disconnect":
                    async with h.http.post(h.url + "/v1/chat/completions", json={**body, "stream": True}) as r:
                        await r.content.readany()  # read one chunk, then drop the connection
                        r.close()
                elif kind == "cancel":
                    task = asyncio.create_task(h.chat(body))
                    await asyncio.sleep(rng.random() * 0.02)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                elif kind == "stream":
                    await h.stream_text(body)
                else:
                    await h.chat(body)

            await asyncio.gather(*(one(i) for i in range(60)))
            for _ in range(100):  # disconnects propagate asynchronously
                core = h.proxy.core
                if core.balancer.live_leases() == 0 and core.flights.in_flight() == 0:
                    break
                await asyncio.sleep(0.02)
            h.assert_idle()
            for pool in h.proxy.core.balancer.pools.values():
                for inst in pool.instances():
                    assert inst.active_tokens == 0 and inst.active_requests == 0
    run(scenario())


def test_first_byte_timeout_is_504_and_releases_everything() -> None:
    from proxy.config import Timeouts

    async def scenario() -> None:
        t = Timeouts(connect_s=1, encode_s=0.3, prefill_s=1, first_byte_s=0.3, idle_s=1, probe_s=1, lookup_s=1)
        async with harness(timeouts=t, encode_attempts=1) as h:
            h.pds[0].mock.faults.update({"delay_s": 1.0})
            status, body = await h.chat(chat_body())
            assert status == 504 and body["error"]["type"] == "timeout_error"
            h.encoders[0].mock.faults.update({"delay_s": 1.0})  # encoder too slow: PD gets the media
            status, _ = await h.chat(chat_body(images=(png_data_url(seed=81),)))
            assert status == 200 and h.pds[0].mock.counters["local_encodes"] == 1
            await asyncio.sleep(0.8)
            h.assert_idle()
    run(scenario())
