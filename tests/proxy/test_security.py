"""Security: constant-time admin key compare, tenant isolation (no read, no detection), request limits and
the --max-concurrent admission limit (503, released exactly once)."""

from __future__ import annotations

import asyncio
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.admission import Admission
from proxy.cli import build_parser, config_from_args
from proxy.errors import Overloaded
from proxy.identity import load_tenant_directory
from proxy.media import MediaPolicy
from tests.proxy.helpers import chat_body, harness, png_data_url, run


def _openai_error(body: Any, code: int) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("error"), dict)
            and set(body["error"]) == {"message", "type", "code"} and body["error"]["code"] == code)


def test_admin_key_is_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module proxy.identity calls through

    async def scenario() -> None:
        async with harness(admin_key="s3cret-admin") as h:
            for key, want in (("s3cret-admin", 200), ("s3cret-admiN", 401), ("s", 401), ("\u00e9t\u00e9", 401)):
                status, body = await h.post("/instances", {"role": "pd", "url": h.pds[0].url}, {"X-Admin-Key": key})
                assert status == want, body
                if want != 200:
                    assert _openai_error(body, 401)
            assert len(calls) == 4, "every admin request goes through hmac.compare_digest"
            assert all(b == b"s3cret-admin" for _, b in calls)
    run(scenario())


def _shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types, not contents (ids, timestamps differ)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items()) if k not in ("id", "created")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_tenant_cannot_detect_another_tenants_entry(tmp_path: Path) -> None:
    """A's request for an image only B has cached is exactly a cold miss: same status, same response shape
    and headers, the encoder runs, the cold-item counter moves, and the answer text is the same."""
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"sk-a": {"tenant": "a"}, "sk-b": {"tenant": "b"}}))

    async def scenario() -> None:
        tenants = load_tenant_directory(str(path), uuid_secret="s", tenant_header=None)
        async with harness(tenants=tenants) as h:
            a, b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
            cached_by_b, never_seen = png_data_url(48, 40, seed=91), png_data_url(48, 40, seed=92)
            assert (await h.chat(chat_body(images=(cached_by_b,)), b))[0] == 200
            assert (await h.chat(chat_body(images=(cached_by_b,)), b))[0] == 200
            assert h.counters(h.encoders) == 1, "b's second request was warm"
            items = h.proxy.core.metrics.items

            async def observe(img: str) -> tuple[int, Any, set[str], int, float, float]:
                enc_before, cold_before = h.counters(h.encoders), items.labels("cold")._value.get()
                warm_before = items.labels("warm")._value.get()
                async with h.http.post(h.url + "/v1/chat/completions", json=chat_body(images=(img,)),
                                       headers=a) as resp:
                    body = await resp.json()
                    headers = {k.lower() for k in resp.headers} - {"date", "content-length"}
                return (resp.status, body, headers, h.counters(h.encoders) - enc_before,
                        items.labels("cold")._value.get() - cold_before,
                        items.labels("warm")._value.get() - warm_before)

            probe = await observe(cached_by_b)
            cold = await observe(never_seen)
            assert probe[0] == cold[0] == 200
            assert _shape(probe[1]) == _shape(cold[1])
            assert probe[2] == cold[2], "no header tells a cached item from a cold one"
            assert probe[3] == cold[3] == 1, "the encoder ran for a's request of b's image"
            assert probe[4] == cold[4] == 1 and probe[5] == cold[5] == 0
            ids = {ident for (_, ident) in h.store._entries}
            assert len(ids) == 3, "same image, different tenants: different uuids"
            h.assert_idle()
    run(scenario())


def test_request_size_and_media_count_limits() -> None:
    async def scenario() -> None:
        async with harness(max_request_nbytes=100_000, max_media_items=3,
                           media=MediaPolicy(max_nbytes=30_000, max_image_pixels=10_000)) as h:
            status, body = await h.chat(chat_body(text="y" * 120_000))
            assert status == 413 and _openai_error(body, 413)
            status, body = await h.chat(chat_body(images=tuple(png_data_url(8, 8, seed=i) for i in range(4))))
            assert status == 400 and "too many media items" in body["error"]["message"]
            status, body = await h.chat(chat_body(images=(png_data_url(200, 100),)))  # 20000 px > 10000
            assert status == 413 and "pixels" in body["error"]["message"]
            status, _ = await h.chat(chat_body(images=tuple(png_data_url(8, 8, seed=i) for i in range(3))))
            assert status == 200
            assert h.counters(h.encoders) == 1
            h.assert_idle()
    run(scenario())


def test_admission_tickets_release_exactly_once() -> None:
    adm = Admission(limit=2)
    t1, t2 = adm.enter(), adm.enter()
    with pytest.raises(Overloaded):
        adm.enter()
    assert t1.release() and not t1.release() and adm.active == 1
    t3 = adm.enter()
    assert t2.release() and t3.release() and not t3.release()
    assert adm.active == 0 and adm.admitted == 3 and adm.rejected == 1
    assert Admission(limit=0).enter() is not None  # unlimited
    args = build_parser().parse_args(["--pd", "http://127.0.0.1:9", "--max-concurrent", "7"])
    assert config_from_args(args).max_concurrent == 7


def test_max_concurrent_sheds_load_with_503_and_releases_on_every_outcome() -> None:
    async def scenario() -> None:
        async with harness(max_concurrent=2, token_delay_s=0.03) as h:
            core = h.proxy.core

            async def stream() -> tuple[int, str, bytes]:
                return await h.stream_text(chat_body(max_tokens=10))

            held = [asyncio.create_task(stream()) for _ in range(2)]
            for _ in range(200):
                if core.admission.active == 2:
                    break
                await asyncio.sleep(0.005)
            assert core.admission.active == 2
            async with h.http.post(h.url + "/v1/chat/completions", json=chat_body()) as resp:
                status, body = resp.status, await resp.json()
                assert resp.headers.get("Retry-After") == "1"
            assert status == 503 and _openai_error(body, 503) and body["error"]["type"] == "service_unavailable"
            status, _ = await h.post("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 1})
            assert status == 503
            async with h.http.get(h.url + "/health") as resp:  # health and metrics are never shed
                assert resp.status == 200 and (await resp.json())["in_flight"] == 2
            results = await asyncio.gather(*held)
            assert all(r[0] == 200 and len(r[1].split()) == 10 for r in results)
            assert core.admission.active == 0 and core.metrics.overloaded._value.get() == 2
            # A client that drops its stream mid-way frees its slot too (once).
            async with h.http.post(h.url + "/v1/chat/completions", json=chat_body(max_tokens=50, stream=True)) as r:
                await r.content.readany()
                r.close()
            # A request refused with 400 and one that fails upstream release as well.
            assert (await h.chat({"model": "tiny"}))[0] == 400
            h.pds[0].mock.faults.update({"fail_status": 500, "fail_status_count": 1})
            assert (await h.chat(chat_body()))[0] == 502
            for _ in range(200):
                if core.admission.active == 0 and core.balancer.live_leases() == 0:
                    break
                await asyncio.sleep(0.01)
            assert core.admission.active == 0 and core.admission.rejected == 2
            assert core.metrics.in_flight._value.get() == 0
            statuses = [s for s, _ in await asyncio.gather(*(h.chat(chat_body()) for _ in range(2)))]
            assert statuses == [200, 200]
            h.assert_idle()
    run(scenario())


def test_admission_counts_stay_exact_under_a_burst_with_cancellations() -> None:
    async def scenario() -> None:
        async with harness(pds=2, max_concurrent=5, token_delay_s=0.005) as h:
            core = h.proxy.core

            async def one(i: int) -> int:
                if i % 4 == 3:  # a client that gives up early
                    task = asyncio.create_task(h.chat(chat_body(max_tokens=20)))
                    await asyncio.sleep(0.01)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    return -1
                status, _ = await h.chat(chat_body(stream=bool(i % 2), max_tokens=8))
                return int(status)

            statuses = await asyncio.gather(*(one(i) for i in range(40)))
            for _ in range(200):
                if core.admission.active == 0 and core.balancer.live_leases() == 0:
                    break
                await asyncio.sleep(0.01)
            assert set(statuses) <= {200, 503, -1} and 503 in statuses and 200 in statuses
            assert core.admission.active == 0 and core.metrics.in_flight._value.get() == 0
            assert core.admission.rejected >= statuses.count(503)  # a cancelled client may have been refused too
            assert 30 <= core.admission.admitted + core.admission.rejected <= 40  # cancelled ones may never arrive
            h.assert_idle()
    run(scenario())
