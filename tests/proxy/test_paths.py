"""End-to-end paths through the proxy with mock vLLM instances (in-memory store)."""

from __future__ import annotations

import asyncio

from proxy.balancer import Role
from tests.proxy.helpers import NAMESPACE, chat_body, harness, png_data_url, run


def test_text_only_goes_to_pd_and_never_to_an_encoder() -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, body = await h.chat(chat_body(text="hello"))
            assert status == 200, body
            assert body["choices"][0]["message"]["content"]
            assert h.counters(h.encoders) == 0
            assert h.counters(h.pds) == 1
            h.assert_idle()
    run(scenario())


def test_cold_image_is_encoded_once_then_warm_image_skips_the_encoder() -> None:
    async def scenario() -> None:
        async with harness() as h:
            img = png_data_url(64, 64, seed=1)
            s1, b1 = await h.chat(chat_body(images=(img,)))
            assert s1 == 200, b1
            assert h.counters(h.encoders) == 1
            assert h.pds[0].mock.counters["metadata_only_parts"] == 1
            assert h.pds[0].mock.counters["local_encodes"] == 0
            s2, b2 = await h.chat(chat_body(images=(img,)))
            assert s2 == 200
            assert h.counters(h.encoders) == 1, "warm image must never reach an encoder"
            assert h.pds[0].mock.counters["metadata_only_parts"] == 2
            assert b1["choices"][0]["message"]["content"] == b2["choices"][0]["message"]["content"]
            h.assert_idle()
    run(scenario())


def test_output_with_cache_equals_output_of_local_encoding() -> None:
    async def scenario() -> None:
        img = png_data_url(100, 60, seed=3)
        async with harness() as h:
            _, cached = await h.chat(chat_body(images=(img,)))
        async with harness(encoders=0) as h:  # no encoder at all: PD encodes locally
            status, local = await h.chat(chat_body(images=(img,)))
            assert status == 200
            assert h.pds[0].mock.counters["local_encodes"] == 1
        assert cached["choices"][0]["message"]["content"] == local["choices"][0]["message"]["content"]
    run(scenario())


def test_streaming_sse_passes_through() -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, text, raw = await h.stream_text(chat_body(images=(png_data_url(),), max_tokens=5))
            assert status == 200
            assert raw.rstrip().endswith(b"data: [DONE]")
            assert len(text.split()) == 5
            h.assert_idle()
    run(scenario())


def test_concurrent_requests_for_one_cold_image_encode_it_once() -> None:
    async def scenario() -> None:
        async with harness() as h:
            h.encoders[0].mock.faults.update({"delay_s": 0.3})
            img = png_data_url(80, 80, seed=9)
            results = await asyncio.gather(*(h.chat(chat_body(images=(img,))) for _ in range(8)))
            assert all(s == 200 for s, _ in results)
            assert h.encoders[0].mock.counters["encoded_items"] == 1
            assert len({b["choices"][0]["message"]["content"] for _, b in results}) == 1
            h.assert_idle()
    run(scenario())


def test_images_of_one_request_go_to_one_encoder_in_one_call() -> None:
    async def scenario() -> None:
        async with harness() as h:
            imgs = tuple(png_data_url(40, 40, seed=s) for s in range(3))
            status, _ = await h.chat(chat_body(images=imgs))
            assert status == 200
            assert h.counters(h.encoders) == 1
            assert h.encoders[0].mock.counters["encoded_items"] == 3
            assert len(h.store) == 3
    run(scenario())


def test_client_uuid_is_replaced() -> None:
    async def scenario() -> None:
        async with harness() as h:
            body = chat_body(images=(png_data_url(seed=4),))
            body["messages"][0]["content"][1]["uuid"] = "victim-uuid"
            body["kv_transfer_params"] = {"do_remote_prefill": True}
            status, _ = await h.chat(body)
            assert status == 200
            assert h.store.get(NAMESPACE, "victim-uuid") is None
            assert len(h.store) == 1
    run(scenario())


def test_eccache_down_behaves_as_all_miss() -> None:
    async def scenario() -> None:
        async with harness() as h:
            img = png_data_url(seed=5)
            await h.chat(chat_body(images=(img,)))
            h.store.fail = True  # lookups fail now; the encoder's write fails too
            status, _ = await h.chat(chat_body(images=(img,)))
            assert status in (200,)
            h.assert_idle()
    run(scenario())


def test_completions_models_metrics() -> None:
    async def scenario() -> None:
        async with harness() as h:
            status, body = await h.post("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 3})
            assert status == 200 and body["choices"][0]["text"]
            async with h.http.get(h.url + "/v1/models") as resp:
                assert resp.status == 200
                assert (await resp.json())["data"][0]["id"] == "tiny"
            await h.chat(chat_body(images=(png_data_url(),)))
            async with h.http.get(h.url + "/metrics") as resp:
                text = await resp.text()
            assert "eccache_proxy_requests_total" in text
            assert 'eccache_proxy_media_items_total{outcome="cold"} 1.0' in text
            assert h.proxy.core.balancer.pool(Role.PD).instances()[0].total_requests == 3  # completions, models, chat
    run(scenario())
