"""The proxy against a real eccache server (real Redis): mocks write/read embeddings through the client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.identity import load_tenant_directory
from tests.proxy.helpers import NAMESPACE, chat_body, harness, png_data_url, run

pytestmark = pytest.mark.integration


def test_warm_image_never_reaches_an_encoder(ec_address: str) -> None:
    async def scenario() -> None:
        async with harness(eccache_address=ec_address) as h:
            img = png_data_url(96, 64, seed=71)
            s1, b1 = await h.chat(chat_body(images=(img,)))
            assert s1 == 200, b1
            assert h.counters(h.encoders) == 1
            s2, b2 = await h.chat(chat_body(images=(img,)))
            assert s2 == 200 and h.counters(h.encoders) == 1
            assert h.pds[0].mock.counters["metadata_only_parts"] == 2
            assert h.pds[0].mock.counters["cache_loads"] == 2
            assert b1["choices"][0]["message"]["content"] == b2["choices"][0]["message"]["content"]
            h.assert_idle()
    run(scenario())


def test_namespace_comes_from_the_alias_the_instances_registered(ec_address: str) -> None:
    async def scenario() -> None:
        async with harness(eccache_address=ec_address) as h:
            assert await h.proxy.core.cache.namespace_for("tiny") == NAMESPACE
            assert await h.proxy.core.cache.namespace_for("unknown-model") is None
    run(scenario())


def test_tenants_are_isolated_in_eccache(ec_address: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        f = tmp_path / "t.json"
        f.write_text(json.dumps({"ka": {"tenant": "a"}, "kb": {"tenant": "b"}}))
        tenants = load_tenant_directory(str(f), uuid_secret="s", tenant_header=None)
        async with harness(eccache_address=ec_address, tenants=tenants) as h:
            img = png_data_url(seed=72)
            for key in ("ka", "kb", "ka", "kb"):
                status, _ = await h.chat(chat_body(images=(img,)), {"Authorization": f"Bearer {key}"})
                assert status == 200
            assert h.counters(h.encoders) == 2
            assert h.encoders[0].mock.counters["encoded_items"] == 2
    run(scenario())


@pytest.mark.parametrize("convention", ["vllm", "layerwise"])
def test_e_p_d_with_real_cache(ec_address: str, convention: str) -> None:
    async def scenario() -> None:
        async with harness(eccache_address=ec_address, pds=0, prefills=1, decodes=1, convention=convention) as h:
            img = png_data_url(seed=73)
            for _ in range(2):
                status, text, _ = await h.stream_text(chat_body(images=(img,), max_tokens=5))
                assert status == 200 and len(text.split()) == 5
            assert h.counters(h.encoders) == 1
            assert h.prefills[0].mock.counters["cache_loads"] == 2
            h.assert_idle()
    run(scenario())


def test_unreachable_eccache_is_all_miss() -> None:
    async def scenario() -> None:
        async with harness(eccache_address="127.0.0.1:1") as h:
            status, _ = await h.chat(chat_body(images=(png_data_url(seed=74),)))
            assert status == 200
            assert h.pds[0].mock.counters["local_encodes"] == 1
            h.assert_idle()
    run(scenario())
