"""Tenant isolation: uuids are keyed per tenant, so tenants never read or probe each other's entries."""

from __future__ import annotations

import json
from pathlib import Path

from proxy.identity import load_tenant_directory
from tests.proxy.helpers import NAMESPACE, chat_body, harness, png_data_url, run


def _tenants(tmp_path: Path) -> str:
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"sk-a": {"tenant": "a"}, "sk-b": {"tenant": "b", "secret": "b-secret"},
                                "sk-a2": "a"}))
    return str(path)


def test_two_tenants_same_image_get_different_uuids_and_cannot_read_each_other(tmp_path: Path) -> None:
    async def scenario() -> None:
        tenants = load_tenant_directory(_tenants(tmp_path), uuid_secret="s", tenant_header=None)
        async with harness(tenants=tenants) as h:
            img = png_data_url(seed=51)
            a = {"Authorization": "Bearer sk-a"}
            b = {"Authorization": "Bearer sk-b"}
            assert (await h.chat(chat_body(images=(img,)), a))[0] == 200
            assert h.counters(h.encoders) == 1
            assert (await h.chat(chat_body(images=(img,)), b))[0] == 200
            assert h.counters(h.encoders) == 2, "tenant b must not hit tenant a's entry"
            assert len(h.store) == 2
            ids = [ident for (_, ident) in h.store._entries]
            assert len(set(ids)) == 2
            # Same tenant (second key of tenant a) is warm.
            assert (await h.chat(chat_body(images=(img,)), {"Authorization": "Bearer sk-a2"}))[0] == 200
            assert h.counters(h.encoders) == 2
            # A client-sent uuid naming tenant a's entry gives tenant b nothing.
            body = chat_body(images=(img,))
            body["messages"][0]["content"][1] = {"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 6, 6]},
                                                 "uuid": ids[0]}
            status, err = await h.chat(body, b)
            assert status == 400 and err["error"]["type"] == "invalid_request_error"
            assert all(k[0] == NAMESPACE for k in h.store._entries)
    run(scenario())


def test_unknown_or_missing_api_key_is_401(tmp_path: Path) -> None:
    async def scenario() -> None:
        tenants = load_tenant_directory(_tenants(tmp_path), uuid_secret="s", tenant_header=None)
        async with harness(tenants=tenants) as h:
            status, body = await h.chat(chat_body())
            assert status == 401 and body["error"]["type"] == "authentication_error"
            status, _ = await h.chat(chat_body(), {"Authorization": "Bearer wrong"})
            assert status == 401
            status, _ = await h.chat(chat_body(), {"x-api-key": "sk-b"})
            assert status == 200
            assert h.counters(h.pds) == 1
    run(scenario())


def test_tenant_from_trusted_header() -> None:
    async def scenario() -> None:
        tenants = load_tenant_directory(None, uuid_secret="s", tenant_header="X-Tenant")
        async with harness(tenants=tenants) as h:
            img = png_data_url(seed=52)
            await h.chat(chat_body(images=(img,)), {"X-Tenant": "t1"})
            await h.chat(chat_body(images=(img,)), {"X-Tenant": "t2"})
            await h.chat(chat_body(images=(img,)), {"X-Tenant": "t1"})
            assert h.counters(h.encoders) == 2
    run(scenario())
