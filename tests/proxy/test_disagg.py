"""E → P → D in both conventions (vLLM: P first; vllm-ascend layerwise: D first, metaserver call-back)."""

from __future__ import annotations

import pytest

from tests.proxy.helpers import chat_body, harness, png_data_url, run


async def _reference_output(img: str, stream: bool) -> str:
    async with harness() as h:  # E + PD
        if stream:
            return (await h.stream_text(chat_body(images=(img,), max_tokens=9)))[1]
        return (await h.chat(chat_body(images=(img,), max_tokens=9)))[1]["choices"][0]["message"]["content"]


@pytest.mark.parametrize("convention", ["vllm", "layerwise"])
@pytest.mark.parametrize("stream", [False, True])
def test_e_p_d_matches_e_pd_output(convention: str, stream: bool) -> None:
    async def scenario() -> None:
        img = png_data_url(90, 70, seed=41)
        expected = await _reference_output(img, stream)
        async with harness(pds=0, prefills=2, decodes=2, convention=convention) as h:
            if stream:
                status, text, _ = await h.stream_text(chat_body(images=(img,), max_tokens=9))
            else:
                status, body = await h.chat(chat_body(images=(img,), max_tokens=9))
                text = body["choices"][0]["message"]["content"] if status == 200 else str(body)
            assert status == 200, text
            assert text == expected
            assert h.counters(h.encoders) == 1
            assert sum(p.mock.counters["prefills"] for p in h.prefills) == 1
            assert sum(d.mock.counters["decodes"] for d in h.decodes) == 1
            metaserver_calls = sum(d.mock.counters["metaserver_calls"] for d in h.decodes)
            assert metaserver_calls == (1 if convention == "layerwise" else 0)
            # P got metadata-only parts: it is the EC consumer
            assert sum(p.mock.counters["metadata_only_parts"] for p in h.prefills) == 1
            h.assert_idle()
    run(scenario())


@pytest.mark.parametrize("convention", ["vllm", "layerwise"])
def test_text_only_p_d(convention: str) -> None:
    async def scenario() -> None:
        async with harness(pds=0, prefills=1, decodes=1, convention=convention) as h:
            status, body = await h.chat(chat_body(text="plain text", max_tokens=4))
            assert status == 200, body
            assert h.counters(h.encoders) == 0
            status, body = await h.post("/v1/completions", {"model": "tiny", "prompt": "abc", "max_tokens": 3})
            assert status == 200, body
            assert h.prefills[0].mock.counters["prefills"] == 2
            h.assert_idle()
    run(scenario())


def test_layerwise_failed_prefill_retried_on_another_p() -> None:
    async def scenario() -> None:
        async with harness(pds=0, prefills=2, decodes=1, convention="layerwise") as h:
            h.prefills[0].mock.faults.update({"fail_status": 500})
            for _ in range(2):
                status, body = await h.chat(chat_body(max_tokens=3))
                assert status == 200, body
            assert sum(p.mock.counters["prefills"] for p in h.prefills) == 2
            assert h.prefills[0].mock.counters["requests"] >= 1  # the failure happened and was retried
            assert h.proxy.core.metrics.retries.labels("prefill")._value.get() == 1
            h.assert_idle()
    run(scenario())


def test_metaserver_rejects_unknown_request_id() -> None:
    async def scenario() -> None:
        async with harness(pds=0, prefills=1, decodes=1, convention="layerwise") as h:
            status, body = await h.post("/v1/metaserver", {"request_id": "nope"})
            assert status == 404 and body["error"]["type"] == "not_found_error"
            assert h.prefills[0].mock.counters["requests"] == 0
    run(scenario())


def test_vllm_convention_retries_failed_prefill() -> None:
    async def scenario() -> None:
        async with harness(pds=0, prefills=2, decodes=1) as h:
            await h.prefills[0].stop()
            for _ in range(3):
                status, body = await h.chat(chat_body(max_tokens=3))
                assert status == 200, body
            assert h.prefills[1].mock.counters["prefills"] == 3
            h.assert_idle()
    run(scenario())
