"""Pure logic: tokens, image headers, media policy, uuids, balancer, routing, rewrite, single flight."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.balancer import Balancer, HealthPolicy, Role, RolePool
from proxy.errors import BadRequest, MediaError, NoInstanceAvailable, PayloadTooLarge, Unauthenticated
from proxy.identity import constant_time_equals, derive_key, derive_uuid, load_tenant_directory
from proxy.imagesize import image_size, make_png
from proxy.media import UrlKind, classify_url, decode_data_url, is_denied_address, resolve_file_url
from proxy.rewrite import ItemPlan, build_decode_body_layerwise, build_pd_body, build_prefill_body_vllm
from proxy.routing import MediaRef, analyze_chat, choose_path
from proxy.routing import Path as RoutePath
from proxy.singleflight import SingleFlight
from proxy.tokens import TokenEstimator, px_for_family


def test_image_tokens_per_family() -> None:
    assert TokenEstimator(px_per_token=px_for_family("Qwen2.5-VL")).image_tokens((1024, 1024)) == 37 * 37
    assert TokenEstimator(px_per_token=px_for_family("qwen3-vl")).image_tokens((1024, 1024)) == 32 * 32
    est = TokenEstimator(chars_per_token=3, unknown_image_tokens=77)
    assert est.image_tokens(None) == 77 and est.text_tokens(10) == 4 and est.text_tokens(0) == 0
    assert est.output_tokens(None) == 256 and est.output_tokens(10**9) == 4096 and est.output_tokens(True) == 256
    with pytest.raises(ValueError):
        TokenEstimator(px_per_token=0)


def _jpeg(w: int, h: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def test_image_sizes_from_headers() -> None:
    assert image_size(make_png(123, 45)) == (123, 45)
    assert image_size(_jpeg(640, 480)) == (640, 480)
    assert image_size(b"GIF89a" + struct.pack("<HH", 10, 20) + b"\x00" * 10) == (10, 20)
    vp8 = b"RIFF" + b"\x00" * 4 + b"WEBPVP8 " + b"\x00" * 4 + b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", 300, 200)
    assert image_size(vp8) == (300, 200)
    b0, b1, b2, b3 = (99 & 0xFF), ((99 >> 8) & 0x3F) | ((49 & 0x3) << 6), (49 >> 2) & 0xFF, (49 >> 10) & 0xF
    vp8l = b"RIFF" + b"\x00" * 4 + b"WEBPVP8L" + b"\x00" * 4 + b"\x2f" + bytes([b0, b1, b2, b3])
    assert image_size(vp8l) == (100, 50)
    vp8x = b"RIFF" + b"\x00" * 4 + b"WEBPVP8X" + b"\x00" * 8 + (1919).to_bytes(3, "little") + (1079).to_bytes(3, "little")
    assert image_size(vp8x) == (1920, 1080)
    assert image_size(make_png(5, 5)[:20]) is None
    assert image_size(b"hello") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8X"]))
def test_image_size_never_raises(tail: bytes, head: bytes) -> None:
    result = image_size(head + tail)
    assert result is None or (result[0] > 0 and result[1] > 0)


def test_data_urls_and_limits() -> None:
    raw = b"\x00\x01hello"
    assert decode_data_url("data:image/png;base64," + base64.b64encode(raw).decode(), 100) == ("image/png", raw)
    assert decode_data_url("data:,a%20b", 100) == ("text/plain", b"a b")
    with pytest.raises(PayloadTooLarge):
        decode_data_url("data:;base64," + base64.b64encode(b"x" * 200).decode(), 100)
    with pytest.raises(MediaError):
        decode_data_url("data:image/png;base64", 100)
    assert classify_url("HTTPS://x") is UrlKind.HTTP
    with pytest.raises(MediaError):
        classify_url("gopher://x")


def test_file_urls_stay_under_the_allowed_dir(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1")
    assert resolve_file_url(f"file://{tmp_path}/a/x", str(tmp_path / "a")) == tmp_path / "a" / "x"
    for bad in (f"file://{tmp_path}/a/../x", f"file://{tmp_path}/a/%2e%2e/x", "file://remote/etc/passwd"):
        with pytest.raises(MediaError):
            resolve_file_url(bad, str(tmp_path / "a"))
    with pytest.raises(MediaError):
        resolve_file_url(f"file://{tmp_path}/a/x", None)


def test_deny_list() -> None:
    for addr in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0",
                 "fe80::1%eth0", "not-an-ip"):
        assert is_denied_address(addr), addr
    assert not is_denied_address("8.8.8.8")


def test_uuid_is_keyed_by_tenant_and_namespace(tmp_path: Path) -> None:
    k1, k2 = derive_key("one"), derive_key("two")
    d = b"\x01" * 32
    assert derive_uuid(k1, "ns", d) == derive_uuid(k1, "ns", d)
    assert len({derive_uuid(k1, "ns", d), derive_uuid(k2, "ns", d), derive_uuid(k1, "ns2", d),
                derive_uuid(k1, "n", b"s" + d[1:])}) == 4
    f = tmp_path / "t.json"
    f.write_text('{"ka": {"tenant": "a"}, "kb": "b"}')
    tenants = load_tenant_directory(str(f), uuid_secret="x", tenant_header=None)
    ta, tb = tenants.resolve({"Authorization": "Bearer ka"}), tenants.resolve({"x-api-key": "kb"})
    assert ta.name == "a" and tb.name == "b" and ta.key != tb.key
    with pytest.raises(Unauthenticated):
        tenants.resolve({})
    bad = tmp_path / "bad.json"
    bad.write_text('{"k": {"secret": "s"}}')
    with pytest.raises(ValueError):
        load_tenant_directory(str(bad), uuid_secret="x", tenant_header=None)
    assert constant_time_equals("a", "a") and not constant_time_equals("a", "b")
    assert not constant_time_equals(None, "a") and not constant_time_equals("", "")


def test_balancer_picks_least_loaded_and_releases_once() -> None:
    pool = RolePool(Role.PD)
    a, b = pool.add("http://a/"), pool.add("http://b")
    assert pool.add("http://a") is a
    la = pool.acquire(100)
    lb = pool.acquire(10)
    assert (la.instance, lb.instance) == (a, b)
    assert pool.acquire(5).instance is b  # b has 10 < 100
    assert la.release() and not la.release()
    assert a.active_tokens == 0 and a.active_requests == 0
    assert pool.acquire(1, exclude=[a]).instance is b
    with pytest.raises(NoInstanceAvailable):
        pool.acquire(1, exclude=[a, b])


def test_eject_after_n_failures_and_readmit() -> None:
    pool = RolePool(Role.ENCODE, HealthPolicy(eject_after=2, readmit_after=2))
    a, b = pool.add("http://a"), pool.add("http://b")
    assert not pool.record_failure(a) and pool.record_failure(a)
    assert all(pool.acquire(0).instance is b for _ in range(5))
    assert not pool.record_success(a) and pool.record_success(a)
    assert {pool.acquire(1000).instance for _ in range(2)} == {a, b}


def test_removed_instance_leases_still_release() -> None:
    bal = Balancer()
    pool = bal.pool(Role.DECODE)
    pool.add("http://a")
    lease = pool.acquire(7)
    assert pool.remove("http://a") and not pool.remove("http://a")
    with pytest.raises(NoInstanceAvailable):
        pool.acquire(1)
    lease.release()
    assert bal.live_leases() == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5000), st.integers(0, 9)), max_size=120))
def test_balancer_invariants_under_random_load(ops: list[tuple[bool, int, int]]) -> None:
    pool = RolePool(Role.PD)
    insts = [pool.add(f"http://i{i}") for i in range(4)]
    leases = []
    for acquire, tokens, pick in ops:
        if acquire or not leases:
            healthy_min = min(i.active_tokens for i in insts)
            lease = pool.acquire(tokens)
            assert lease.instance.active_tokens - tokens == healthy_min  # chose a least-loaded instance
            leases.append(lease)
        else:
            leases.pop(pick % len(leases)).release()
    for lease in leases:
        lease.release()
        lease.release()
    assert all(i.active_tokens == 0 and i.active_requests == 0 for i in insts) and pool.live_leases == 0


def test_analyze_chat_sanitises_and_routes() -> None:
    body = {"model": "m", "kv_transfer_params": {}, "ec_transfer_params": {},
            "messages": [{"role": "system", "content": "abc"},
                         {"role": "user", "content": [{"type": "text", "text": "hi", "uuid": "u"},
                                                      {"type": "image_url", "image_url": "data:,x", "uuid": "evil"},
                                                      {"type": "video_url", "video_url": {"url": "v"}, "uuid": "u2"}]}]}
    req = analyze_chat(body)
    assert req.modified and req.text_chars == 5 and req.media == [MediaRef(1, 1, "data:,x")]
    assert "kv_transfer_params" not in body and all("uuid" not in p for p in body["messages"][1]["content"])
    assert choose_path(has_media=True, disaggregated=True) is RoutePath.E_P_D
    assert choose_path(has_media=False, disaggregated=False) is RoutePath.PD
    with pytest.raises(BadRequest):
        analyze_chat({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_embeds"}]}]})
    plain = analyze_chat({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert not plain.modified and not plain.has_media


def test_rewrite_builds_metadata_only_and_fallback_parts() -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 9,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                      {"type": "image_url", "image_url": {"url": "http://x"}}]}]}
    item = ItemPlan(MediaRef(0, 1, "http://x"), "u1", "data:image/png;base64,AA", {"image_grid_thw": [1, 2, 2]})
    meta = build_pd_body(body, [item], metadata_only=True)
    assert meta["messages"][0]["content"][1] == {"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 2, 2]},
                                                 "uuid": "u1"}
    media = build_pd_body(body, [item], metadata_only=False)
    assert media["messages"][0]["content"][1]["uuid"] == "u1"
    assert media["messages"][0]["content"][1]["image_url"]["url"].startswith("data:")
    assert body["messages"][0]["content"][1]["image_url"]["url"] == "http://x"  # original untouched
    p = build_prefill_body_vllm(meta)
    assert p["max_tokens"] == 1 and p["stream"] is False and "stream_options" not in p
    assert p["kv_transfer_params"]["do_remote_decode"] is True
    d = build_decode_body_layerwise(meta, "http://proxy/v1/metaserver", "r1")
    assert d["kv_transfer_params"]["do_remote_prefill"] and d["stream"] is True


def test_single_flight_shares_one_result() -> None:
    async def scenario() -> None:
        sf: SingleFlight[str, int] = SingleFlight()
        owned, waiting = sf.claim(["a", "b"])
        assert owned == ["a", "b"] and not waiting
        owned2, waiting2 = sf.claim(["b", "c"])
        assert owned2 == ["c"] and list(waiting2) == ["b"]
        sf.resolve("b", 7)
        sf.resolve("b", 8)  # no-op
        assert await waiting2["b"] == 7
        sf.resolve("a", 1)
        sf.resolve("c", 2)
        assert sf.in_flight() == 0 and sf.joined == 1
    asyncio.run(scenario())


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4) | st.dictionaries(
                         st.sampled_from(["model", "messages", "role", "content", "type", "text", "image_url",
                                          "url", "uuid", "stream", "prompt"]), children, max_size=5),
                     max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_analyzers_only_ever_raise_bad_request(body: object) -> None:
    from proxy.routing import analyze_completion

    for analyze in (analyze_chat, analyze_completion):
        with contextlib.suppress(BadRequest):
            analyze(body)


def test_json_shape_checks_never_recurse() -> None:
    from proxy.routing import json_problem

    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_problem(deep) is not None and "deeper" in str(json_problem(deep))
    assert json_problem({"a": [{"b": "c"}]}) is None
    assert json_problem({"t": "x\ud800"}, check_text=True) is not None
    assert json_problem({"\udfff": 1}, check_text=True) is not None
    assert json_problem({"t": "ok \U0001f600"}, check_text=True) is None


def test_field_types_and_image_checks() -> None:
    from proxy.media import MediaPolicy, check_image
    from proxy.routing import check_field_types

    check_field_types({"max_tokens": 5, "temperature": 0, "stop": ["a"], "tools": [], "n": None})
    for bad in ({"max_tokens": 0}, {"max_tokens": True}, {"n": 2**31}, {"temperature": "1"},
                {"stop": [1]}, {"stream_options": []}, {"seed": 1.5}):
        with pytest.raises(BadRequest):
            check_field_types(bad)
    policy = MediaPolicy(max_image_pixels=100 * 100)
    png = make_png(10, 10)
    assert check_image(png, "image/png", policy) == (10, 10)
    assert check_image(png, None, policy) == (10, 10)
    with pytest.raises(MediaError):
        check_image(png, "text/html", policy)
    with pytest.raises(MediaError):
        check_image(png[:20], "image/png", policy)
    with pytest.raises(MediaError):
        check_image(b"BM not an image we read", None, policy)
    assert check_image(b"BM", None, MediaPolicy(allow_unknown_formats=True)) is None
    bomb = png[:16] + struct.pack(">II", 100_000, 100_000) + png[24:]
    with pytest.raises(PayloadTooLarge):
        check_image(bomb, "image/png", policy)


def test_deny_list_covers_shared_and_embedded_ipv4_addresses() -> None:
    for addr in ("100.64.0.1", "100.100.100.200", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:10.0.0.1",
                 "198.18.0.1", "fe80::1%eth0", "not-an-ip"):
        assert is_denied_address(addr), addr
    for addr in ("8.8.8.8", "2606:4700::1", "1.1.1.1"):
        assert not is_denied_address(addr), addr


def _events(*objs: object) -> bytes:
    import json

    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


_ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
_TOKEN = {"choices": [{"index": 0, "delta": {"content": " hi"}, "finish_reason": None}]}
_ERROR = {"error": {"message": "Internal server error", "type": "InternalServerError", "code": 500}}


def test_stream_opening_waits_past_the_role_chunk_and_reports_an_opening_error() -> None:
    from proxy.sse import MAX_OPENING_BYTES, Opening, classify_opening

    assert classify_opening(b"").kind is Opening.INCOMPLETE
    assert classify_opening(_events(_ROLE)).kind is Opening.INCOMPLETE
    assert classify_opening(_events(_ROLE)[:-1]).kind is Opening.INCOMPLETE  # partial event
    assert classify_opening(b": keep-alive\n\n" + _events(_ROLE)).kind is Opening.INCOMPLETE
    assert classify_opening(_events(_ROLE, _TOKEN)).kind is Opening.OUTPUT
    assert classify_opening(_events(_ROLE, _TOKEN).replace(b"\n", b"\r\n")).kind is Opening.OUTPUT
    state = classify_opening(_events(_ROLE, _ERROR, b"[DONE]"))
    assert state.kind is Opening.ERROR and state.error == _ERROR["error"]
    assert classify_opening(_events(_ROLE, _TOKEN, _ERROR)).kind is Opening.OUTPUT  # output came first
    assert classify_opening(_events(b"[DONE]")).kind is Opening.OUTPUT
    assert classify_opening(_events(b"not json")).kind is Opening.OUTPUT  # not ours to judge: passed on
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    assert classify_opening(_events(_ROLE, finish)).kind is Opening.OUTPUT
    tool = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": None}]}
    assert classify_opening(_events(tool)).kind is Opening.OUTPUT
    completion = {"choices": [{"index": 0, "text": "x", "finish_reason": None}]}
    assert classify_opening(_events(completion)).kind is Opening.OUTPUT
    assert classify_opening(_events({"choices": [], "usage": {"total_tokens": 3}})).kind is Opening.OUTPUT
    assert classify_opening(b"data: " + b" " * (MAX_OPENING_BYTES + 1)).kind is Opening.OUTPUT
