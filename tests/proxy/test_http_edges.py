"""HTTP surface: error bodies, limits, admin registration, media sources (http, file)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from aiohttp import web

from proxy.balancer import Role
from proxy.imagesize import make_png
from proxy.media import MediaPolicy
from tests.proxy.helpers import chat_body, harness, png_data_url, run


def _is_openai_error(body: object, code: int) -> bool:
    return (isinstance(body, dict) and set(body["error"]) == {"message", "type", "code"}
            and body["error"]["code"] == code)


def test_unknown_route_404_and_malformed_requests_400() -> None:
    async def scenario() -> None:
        async with harness() as h:
            async with h.http.get(h.url + "/nope") as resp:
                assert resp.status == 404 and _is_openai_error(await resp.json(), 404)
            async with h.http.post(h.url + "/v1/chat/completions", data=b"{not json") as resp:
                assert resp.status == 400 and _is_openai_error(await resp.json(), 400)
            for bad in ([], {"model": "tiny"}, {"model": "tiny", "messages": []},
                        {"model": "tiny", "messages": [{"role": "user", "content": 5}]},
                        {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
                        {"model": 3, "messages": [{"role": "user", "content": "x"}]},
                        {"model": "tiny", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}):
                status, body = await h.chat(bad)  # type: ignore[arg-type]
                assert status == 400 and _is_openai_error(body, 400), bad
            status, body = await h.chat(chat_body(images=("data:image/png;base64,@@@",)))
            assert status == 400
            status, body = await h.chat(chat_body(images=("ftp://x/y.png",)))
            assert status == 400 and "scheme" in body["error"]["message"]
            status, body = await h.post("/v1/completions", {"model": "tiny"})
            assert status == 400
            assert h.counters(h.pds) == 0 and h.counters(h.encoders) == 0
            h.assert_idle()
    run(scenario())


def test_request_and_media_size_limits() -> None:
    async def scenario() -> None:
        async with harness(max_request_nbytes=200_000, media=MediaPolicy(max_nbytes=50_000)) as h:
            big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 60_000).decode()
            status, body = await h.chat(chat_body(images=(big,)))
            assert status == 413 and _is_openai_error(body, 413)
            status, body = await h.chat(chat_body(text="x" * 300_000))
            assert status == 413
            async with harness(max_media_items=2) as h2:
                status, _ = await h2.chat(chat_body(images=tuple(png_data_url(seed=i) for i in range(3))))
                assert status == 400
    run(scenario())


def test_admin_registration_requires_the_admin_key() -> None:
    async def scenario() -> None:
        async with harness(pds=1, admin_key="k3y") as h, harness(encoders=0) as other:
            extra = other.pds[0].url
            status, body = await h.post("/instances", {"role": "pd", "url": extra})
            assert status == 401
            status, _ = await h.post("/instances", {"role": "pd", "url": extra}, {"X-Admin-Key": "bad"})
            assert status == 401
            status, body = await h.post("/instances", {"role": "pd", "url": extra},
                                        {"Authorization": "Bearer k3y"})
            assert status == 200 and extra in [i["url"] for i in body["instances"]["pd"]]
            status, _ = await h.post("/instances", {"role": "nope", "url": extra}, {"X-Admin-Key": "k3y"})
            assert status == 400
            for _ in range(4):
                assert (await h.chat(chat_body()))[0] == 200
            assert other.pds[0].mock.counters["requests"] == 2  # balanced over both
            async with h.http.delete(h.url + "/instances", json={"role": "pd", "url": extra},
                                     headers={"X-Admin-Key": "k3y"}) as resp:
                assert resp.status == 200
            assert h.proxy.core.balancer.pool(Role.PD).get(extra) is None
            async with h.http.delete(h.url + "/instances", json={"role": "pd", "url": extra},
                                     headers={"X-Admin-Key": "k3y"}) as resp:
                assert resp.status == 404
        async with harness() as h:  # no admin key configured: admin API disabled
            status, body = await h.post("/instances", {"role": "pd", "url": "http://x"}, {"X-Admin-Key": ""})
            assert status == 403
    run(scenario())


def test_http_media_is_fetched_once_with_limits() -> None:
    async def scenario() -> None:
        png = make_png(50, 30, seed=61)
        hits = {"n": 0}

        async def image(request: web.Request) -> web.StreamResponse:
            hits["n"] += 1
            if request.path == "/slow.png":
                await asyncio.sleep(2)
            if request.path == "/big.png":
                return web.Response(body=png + b"0" * 100_000, content_type="image/png")
            return web.Response(body=png, content_type="image/png")

        app = web.Application()
        app.router.add_get("/{name}", image)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            async with harness(media=MediaPolicy(max_nbytes=50_000, fetch_timeout_s=0.5)) as h:
                status, body = await h.chat(chat_body(images=(base + "/a.png",)))
                assert status == 200, body
                assert hits["n"] == 1, "the encoder and PD get the bytes inline, no second download"
                status, _ = await h.chat(chat_body(images=(base + "/b.png",)))  # same content, other URL
                assert status == 200 and h.counters(h.encoders) == 1, "content hash, not URL"
                assert (await h.chat(chat_body(images=(base + "/big.png",))))[0] == 413
                assert (await h.chat(chat_body(images=(base + "/slow.png",))))[0] == 400
            async with harness(media=MediaPolicy(deny_private_networks=True)) as h:
                status, body = await h.chat(chat_body(images=(base + "/a.png",)))
                assert status == 400 and "internal" in body["error"]["message"]
                status, body = await h.chat(chat_body(images=(f"http://localhost:{port}/a.png",)))
                assert status == 400
        finally:
            await runner.cleanup()
    run(scenario())


def test_file_media_only_under_the_allowed_directory(tmp_path: Path) -> None:
    async def scenario() -> None:
        allowed = tmp_path / "media"
        allowed.mkdir()
        (allowed / "x.png").write_bytes(make_png(20, 20, seed=62))
        (tmp_path / "secret.png").write_bytes(make_png(20, 20, seed=63))
        (allowed / "link.png").symlink_to(tmp_path / "secret.png")
        async with harness(media=MediaPolicy(allowed_file_dir=str(allowed))) as h:
            assert (await h.chat(chat_body(images=(f"file://{allowed}/x.png",))))[0] == 200
            assert (await h.chat(chat_body(images=(f"file://{allowed}/../secret.png",))))[0] == 400
            assert (await h.chat(chat_body(images=(f"file://{allowed}/link.png",))))[0] == 400
            assert (await h.chat(chat_body(images=(f"file://{allowed}/missing.png",))))[0] == 400
        async with harness() as h:
            assert (await h.chat(chat_body(images=(f"file://{allowed}/x.png",))))[0] == 400
    run(scenario())


def test_mm_processor_kwargs_make_identifiers_unpredictable() -> None:
    async def scenario() -> None:
        async with harness() as h:
            img = png_data_url(seed=64)
            body = chat_body(images=(img,), mm_processor_kwargs={"max_pixels": 1000})
            assert (await h.chat(body))[0] == 200
            assert (await h.chat(chat_body(images=(img,), mm_processor_kwargs={"max_pixels": 1000})))[0] == 200
            assert h.pds[0].mock.counters["metadata_only_parts"] == 0  # never metadata-only
            assert h.proxy.core.metrics.items.labels("unpredictable")._value.get() == 2
    run(scenario())


def test_big_inline_image_is_handled_off_the_event_loop() -> None:
    async def scenario() -> None:
        import os

        data = make_png(640, 480, seed=65) + os.urandom(3 << 20)
        url = "data:image/png;base64," + base64.b64encode(data).decode()
        async with harness() as h:
            for _ in range(2):
                status, body = await h.chat(chat_body(images=(url,)))
                assert status == 200, body
            assert h.counters(h.encoders) == 1
            assert h.proxy.core.balancer.pool(Role.ENCODE).instances()[0].total_requests == 1
            h.assert_idle()
    run(scenario())
