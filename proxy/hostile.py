"""Hostile request bodies for the proxy, drawn from a seeded ``random.Random`` (no hypothesis needed), and a
target that sends them through the real HTTP app and judges each answer.

A ``HostileTarget`` runs mock instances (in-memory store) and a proxy with tight limits on loopback, in a
thread with its own event loop, so synchronous callers (``eccache chaos``, hypothesis tests) can use it.
Every case states the precise statuses it may get; ``HostileTarget.check`` sends it and then verifies:
the status is one of them, the body is an OpenAI-style error ``{"error": {"message", "type", "code"}}``
with ``code`` equal to the status and no traceback, the proxy still answers a normal request with 200,
and its counters (leases, active tokens, in-flight admissions, single flights) are back at zero.

No case ever reaches a non-loopback address: internal IP literals are refused before any connection, and
DNS names resolve through a fake resolver (``FAKE_HOSTS``), never through real DNS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from proxy.imagesize import make_png
from proxy.media import is_denied_address

MODEL = "tiny"
MAX_REQUEST_NBYTES = 256 * 1024
MAX_MEDIA_NBYTES = 64 * 1024
MAX_MEDIA_ITEMS = 4
ADMIN_KEY = "hostile-admin-key"
# DNS names the fake resolver knows; all resolve to internal addresses (refused under the deny-list).
FAKE_HOSTS: dict[str, str] = {
    "metadata.internal.test": "169.254.169.254", "db.internal.test": "10.1.2.3",
    "localhost.test": "127.0.0.1", "router.internal.test": "192.168.0.1", "v6.internal.test": "::1",
    "corp.internal.test": "172.16.5.4",
}
INTERNAL_LITERALS = ("127.0.0.1", "127.8.9.10", "10.0.0.1", "10.255.3.4", "169.254.169.254", "192.168.1.1",
                     "172.16.0.1", "172.31.255.254", "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]", "[fe80::1]",
                     "[fd00::5]", "100.64.0.1", "100.100.100.200", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
                     "198.18.0.1")
NORMAL_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "still there?"}],
                          "max_tokens": 2}).encode()


@dataclass(frozen=True, slots=True)
class HostileCase:
    """One hostile request: ``expect`` holds the statuses that are a precise answer to it."""

    family: str
    body: bytes
    expect: frozenset[int]
    path: str = "/v1/chat/completions"
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    case: HostileCase
    status: int
    precise: bool
    reason: str = ""


# ---- generator ----------------------------------------------------------------------------------------------
def _png(rng: random.Random, w: int | None = None, h: int | None = None) -> bytes:
    return make_png(w or rng.randint(1, 40), h or rng.randint(1, 40), seed=rng.randint(0, 255))


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chat(images: list[str] | None = None, text: str = "describe", **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [{"type": "image_url", "image_url": {"url": u}} for u in images or []]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def _enc(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _huge_body(rng: random.Random) -> HostileCase:
    over = MAX_REQUEST_NBYTES + rng.randint(1, 4 * MAX_REQUEST_NBYTES)
    kind = rng.choice(["text", "garbage", "image"])
    if kind == "text":
        body = _enc(_chat(text="x" * over))
    elif kind == "image":
        body = _enc(_chat([_data_url(rng.randbytes(over))]))
    else:
        body = rng.randbytes(over)
    return HostileCase("huge_body", body, frozenset({413}))


def _invalid_json(rng: random.Random) -> HostileCase:
    valid = _enc(_chat())
    kind = rng.choice(["prefix", "garbage", "utf8", "constant", "big_number", "trailing", "empty"])
    if kind == "prefix":
        body = valid[: rng.randint(1, len(valid) - 1)].rstrip()  # a proper prefix of an object is never valid
    elif kind == "garbage":
        body = b"{" + rng.randbytes(rng.randint(1, 200)).replace(b"}", b"")
    elif kind == "utf8":
        body = valid.replace(b"describe", b"descr\xff\xfeibe")
    elif kind == "constant":
        body = valid[:-1] + b',"temperature":' + rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999"]) + b"}"
    elif kind == "big_number":
        body = valid[:-1] + b',"seed":' + b"9" * rng.randint(4400, 9000) + b"}"
    elif kind == "trailing":
        body = valid + b"}" + rng.randbytes(rng.randint(0, 8))
    else:
        body = b""
    return HostileCase("invalid_json", body, frozenset({400}))


def _deep_nesting(rng: random.Random) -> HostileCase:
    depth = rng.choice([65, 100, 999, 1001, 5000, 10_000, 50_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    where = rng.choice(["whole", "field", "content"])
    if where == "whole":
        body = nested
    elif where == "field":
        body = _enc(_chat())[:-1] + b',"extra":' + nested + b"}"
    else:
        body = (b'{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":' + nested + b"}]}")
    # Too deep is 400, but a body over the size limit is refused (413) before it is parsed at all.
    return HostileCase("deep_nesting", body, frozenset({413 if len(body) > MAX_REQUEST_NBYTES else 400}))


_WRONG: dict[str, list[Any]] = {
    "model": [None, 1, 2.5, True, [], {}, "", ["tiny"]],
    "messages": [None, "hi", 1, {}, [], [1], ["x"], [None]],
    "stream": ["yes", 1, 0, [], {}, "true"],
    "max_tokens": ["8", -1, 0, 1.5, True, [], {}, 2**40, -(2**70)],
    "max_completion_tokens": ["8", -3, 0, 2.5, False, [8]],
    "n": [0, -1, "2", 1.5, True, [], 2**33],
    "temperature": ["hot", True, [], {}, "0.5", 2**60],
    "top_p": ["1", False, [1], {}],
    "seed": ["1", 1.5, True, [], 2**64],
    "stop": [1, [1], {}, True, [None], ["a", 2]],
    "tools": ["x", 1, {}, True],
    "tool_choice": [1, [], True],
    "stream_options": ["x", 1, [], True],
    "response_format": ["json", 1, []],
    "logit_bias": [[], "x", 1],
    "user": [1, [], {}, True],
    "mm_processor_kwargs": ["x", 1, [], True],
}
_WRONG_MESSAGE: dict[str, list[Any]] = {
    "message": [1, "x", None, [], True],
    "role": [None, 1, [], {}, True],
    "content": [1, True, {}, 2.5],
    "name": [1, [], {}],
    "part": [1, "x", None, [], True],
    "type": [None, 1, [], {}],
    "text": [None, 1, [], {}, True],
    "image_url": [None, 1, [], {}, "", {"url": 1}, {"url": ""}, {"url": None}, {"url": []}],
    "image_embeds_part": ["forbidden"],
}


def _wrong_type(rng: random.Random) -> HostileCase:
    body = _chat([_data_url(_png(rng))])
    if rng.random() < 0.55:
        name = rng.choice(sorted(_WRONG))
        body[name] = rng.choice(_WRONG[name])
        return HostileCase(f"wrong_type:{name}", _enc(body), frozenset({400}))
    name = rng.choice(sorted(_WRONG_MESSAGE))
    value = rng.choice(_WRONG_MESSAGE[name])
    message = body["messages"][0]
    if name == "message":
        body["messages"][0] = value
    elif name in ("role", "content", "name"):
        message[name] = value
    elif name == "part":
        message["content"][0] = value
    elif name == "type":
        message["content"][rng.randint(0, 1)]["type"] = value
    elif name == "text":
        message["content"][0]["text"] = value
    elif name == "image_url":
        message["content"][1]["image_url"] = value
    else:
        message["content"][1] = {"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 2, 2]},
                                 "uuid": "0" * 64}
    return HostileCase(f"wrong_type:{name}", _enc(body), frozenset({400}))


def _wrong_completion(rng: random.Random) -> HostileCase:
    body: dict[str, Any] = {"model": MODEL, "prompt": "hello", "max_tokens": 2}
    field_name = rng.choice(["prompt", "model", "max_tokens", "stream", "echo"])
    wrong: dict[str, list[Any]] = {"prompt": [None, {}, [], 5, [1, "a"], [[]], [True], [["x"]], [1.5]], "model": [None, 3, ""],
             "max_tokens": ["2", 0, -5, True], "stream": ["no", 2], "echo": ["yes", 1]}
    body[field_name] = rng.choice(wrong[field_name])
    return HostileCase(f"wrong_type:completions.{field_name}", _enc(body), frozenset({400}),
                       path="/v1/completions")


def _bad_image(rng: random.Random) -> HostileCase:
    kind = rng.choice(["bad_base64", "random_bytes", "wrong_mime", "truncated_png", "pixel_bomb", "oversized",
                       "no_comma", "empty", "too_many", "empty_payload", "fake_jpeg"])
    png = _png(rng)
    expect = 400
    if kind == "bad_base64":
        url = "data:image/png;base64," + rng.choice(["@@@", "abc", "a", "====", "%%%%", "ab=cd", "\u00e9\u00e9"])
    elif kind == "random_bytes":
        data = rng.randbytes(rng.randint(1, 2000))
        while data[:1] in (b"\x89", b"\xff", b"G", b"R"):
            data = b"\x00" + data  # keep it unrecognisable: no image magic at the front
        url = _data_url(data)
    elif kind == "wrong_mime":
        url = _data_url(png, rng.choice(["text/html", "application/javascript", "text/plain", "audio/wav",
                                         "application/x-sh", "video/mp4"]))
    elif kind == "truncated_png":
        url = _data_url(png[: rng.randint(1, 23)])
    elif kind == "pixel_bomb":
        w, h = rng.choice([(100_000, 100_000), (65_535, 65_535), (10_000, 10_000), (2**31 - 1, 1), (20_000, 5_000)])
        url = _data_url(png[:16] + struct.pack(">II", w, h) + png[24:])
        expect = 413
    elif kind == "oversized":
        url = _data_url(png + rng.randbytes(MAX_MEDIA_NBYTES + rng.randint(1, 60_000)))
        expect = 413
    elif kind == "no_comma":
        url = "data:image/png;base64" + base64.b64encode(png).decode()
    elif kind == "empty":
        url = ""
    elif kind == "empty_payload":
        url = "data:image/png;base64,"
    elif kind == "fake_jpeg":
        url = _data_url(b"\xff\xd8\xff\xe0" + rng.randbytes(rng.randint(0, 40)).replace(b"\xff", b"\x00"),
                        "image/jpeg")
    else:
        url = _data_url(png)
    images = [url] if kind != "too_many" else [_data_url(_png(rng)) for _ in range(MAX_MEDIA_ITEMS + 1)]
    return HostileCase(f"bad_image:{kind}", _enc(_chat(images)), frozenset({expect}))


def _bad_scheme(rng: random.Random, allowed_dir: str) -> HostileCase:
    url = rng.choice([
        "ftp://example.com/a.png", "gopher://example.com:70/1", "javascript:alert(1)", "file:///etc/passwd",
        f"file://{allowed_dir}/../secret.png", f"file://{allowed_dir}/link.png", "file://remote-host/x.png",
        f"file://{allowed_dir}/missing.png", "mailto:a@b.c", "ws://example.com/", "dict://example.com:11211/",
        "ldap://example.com/", "jar:file:///x!/y", "http://", "https:///nohost.png", "vbscript:msgbox(1)",
        "data", "//example.com/a.png", "a.png", "file:" + allowed_dir + "/%00x.png", "ssh://example.com/",
        f"file://{allowed_dir}/x.png\x00.txt", "http://example.com:99999/a.png",
    ])
    return HostileCase("bad_scheme", _enc(_chat([url])), frozenset({400}))


def _internal_address(rng: random.Random) -> HostileCase:
    scheme = rng.choice(["http", "https"])
    if rng.random() < 0.6:
        host = rng.choice(INTERNAL_LITERALS)
        bare = host.strip("[]")
        assert is_denied_address(bare), host  # never aim a case at a public address
    else:
        host = rng.choice(sorted(FAKE_HOSTS))
    port = rng.choice(["", ":80", ":8080", ":6379", ":2379"])
    path = rng.choice(["/a.png", "/latest/meta-data/iam", "/", "/admin?x=1"])
    return HostileCase("internal_address", _enc(_chat([f"{scheme}://{host}{port}{path}"])), frozenset({400}))


def _surrogate(rng: random.Random) -> HostileCase:
    esc = rng.choice([b"\\ud800", b"\\udfff", b"\\uDBFF", b"x\\udc00y"])
    body = _enc(_chat([_data_url(_png(rng))]))
    if rng.random() < 0.5:
        body = body.replace(b'"text":"', b'"text":"' + esc, 1)
    else:
        body = body.replace(b'"role":"user"', b'"role":"user","name":"' + esc + b'"', 1)
    return HostileCase("lone_surrogate", body, frozenset({400}))


def _admin(rng: random.Random) -> HostileCase:
    key = rng.choice(["", "x", ADMIN_KEY[:-1], ADMIN_KEY + "x", ADMIN_KEY.upper(), "\u00e9" * 8])
    hdr = rng.choice(["X-Admin-Key", "Authorization"])
    value = key if hdr == "X-Admin-Key" else f"Bearer {key}"
    body = _enc({"role": "pd", "url": "http://127.0.0.1:9"})
    return HostileCase("admin_bad_key", body, frozenset({401}), path="/instances",
                       method=rng.choice(["POST", "DELETE"]), headers=((hdr, value),) if key or rng.random() < .5
                       else ())


def _admin_bad_body(rng: random.Random) -> HostileCase:
    body: Any = rng.choice([[], "pd", 5, None, {"role": "pd"}, {"url": "http://127.0.0.1:9"},
                       {"role": "nope", "url": "http://127.0.0.1:9"}, {"role": ["pd"], "url": "http://127.0.0.1:9"},
                       {"role": {"a": 1}, "url": "http://127.0.0.1:9"}, {"role": "pd", "url": "ftp://127.0.0.1/"},
                       {"role": "pd", "url": 5}, {"role": "pd", "url": ["http://127.0.0.1:9"]},
                       {"role": "pd", "url": "javascript:alert(1)"}])
    return HostileCase("admin_bad_body", _enc(body), frozenset({400}), path="/instances",
                       method=rng.choice(["POST", "DELETE"]), headers=(("X-Admin-Key", ADMIN_KEY),))


def _metaserver(rng: random.Random) -> HostileCase:
    body: Any = rng.choice([[], "x", 1, None, {}, {"request_id": 5}, {"request_id": ["a"]}, {"request_id": {"a": 1}},
                       {"request_id": "0" * 32}, {"request_id": rng.randbytes(16).hex()}, {"request_id": ""}])
    return HostileCase("metaserver", _enc(body), frozenset({404 if isinstance(body, dict) else 400}),
                       path="/v1/metaserver")


def _wrong_route(rng: random.Random) -> HostileCase:
    path, method, status = rng.choice([("/v1/chat/completions", "GET", 405), ("/v1/chat/completions", "PUT", 405),
                                       ("/v1/embeddings", "POST", 404), ("/../../etc/passwd", "GET", 404),
                                       ("/v1/models", "POST", 405), ("/instances", "GET", 405)])
    return HostileCase("wrong_route", b"{}", frozenset({status}), path=path, method=method)


FAMILIES: tuple[str, ...] = ("huge_body", "invalid_json", "deep_nesting", "wrong_type", "wrong_completion",
                             "bad_image", "bad_scheme", "internal_address", "lone_surrogate", "admin", "admin_bad_body",
                             "metaserver", "wrong_route")


def random_case(rng: random.Random, allowed_dir: str, family: str | None = None) -> HostileCase:
    """One hostile case drawn from ``rng`` (of ``family`` if given, else any)."""
    name = family or rng.choice(FAMILIES)
    makers: dict[str, Callable[[random.Random], HostileCase]] = {
        "huge_body": _huge_body, "invalid_json": _invalid_json, "deep_nesting": _deep_nesting,
        "wrong_type": _wrong_type, "wrong_completion": _wrong_completion, "bad_image": _bad_image,
        "bad_scheme": lambda r: _bad_scheme(r, allowed_dir), "internal_address": _internal_address,
        "lone_surrogate": _surrogate, "admin": _admin, "admin_bad_body": _admin_bad_body,
        "metaserver": _metaserver, "wrong_route": _wrong_route,
    }
    return makers[name](rng)


# ---- target -------------------------------------------------------------------------------------------------
class FakeResolver(AbstractResolver):
    """Answers only FAKE_HOSTS; any other name fails as unknown. Never queries real DNS."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        address = FAKE_HOSTS.get(host.lower().rstrip("."))
        if address is None:
            raise OSError(f"fake resolver: unknown host {host}")
        fam = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


def _is_openai_error(data: bytes, status: int) -> str:
    """Empty when ``data`` is a proper error body for ``status``; else why not."""
    if b"Traceback" in data or b'File "' in data:
        return "traceback in body"
    try:
        body = json.loads(data)
    except ValueError:
        return f"body is not JSON: {data[:80]!r}"
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict) or set(err) != {"message", "type", "code"}:
        return f"not an OpenAI-style error: {data[:120]!r}"
    if err["code"] != status or not isinstance(err["message"], str) or not isinstance(err["type"], str):
        return f"error code {err.get('code')!r} != status {status}"
    return ""


@dataclass(eq=False)
class HostileTarget:
    """Mocks + proxy on loopback in a background event loop; ``check`` judges one case. Use as a context
    manager (starts on enter, stops on exit)."""

    tried: int = 0
    precise: int = 0
    failures: list[Verdict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-target", daemon=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="eccache-hostile-")
        self.allowed_dir = str(Path(self._tmp.name) / "media")
        self._stack: list[Any] = []
        self._http: aiohttp.ClientSession | None = None
        self.url = ""
        self.core: Any = None
        self._resolver_factory: Any = None

    def __enter__(self) -> HostileTarget:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout_s: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    async def _start(self) -> None:
        from proxy import fetch
        from proxy.cache import CacheView
        from proxy.config import ProxyConfig, Timeouts
        from proxy.media import MediaPolicy
        from proxy.memstore import AsyncMemoryBackend, MemoryStore
        from proxy.mock_vllm import MockConfig, start_mock
        from proxy.server import start_proxy

        allowed = Path(self.allowed_dir)
        allowed.mkdir()
        (allowed / "x.png").write_bytes(make_png(8, 8))
        secret = allowed.parent / "secret.png"
        secret.write_bytes(make_png(9, 9))
        (allowed / "link.png").symlink_to(secret)
        self._resolver_factory = fetch.RESOLVER_FACTORY
        fetch.RESOLVER_FACTORY = FakeResolver  # no real DNS while the target runs (restored by close)
        store = MemoryStore()
        enc = await start_mock(MockConfig(role="encode", model=MODEL), store)
        pd = await start_mock(MockConfig(role="pd", model=MODEL), store)
        self._stack += [enc, pd]
        cfg = ProxyConfig(host="127.0.0.1", port=0, encode_urls=(enc.url,), pd_urls=(pd.url,),
                          admin_key=ADMIN_KEY, max_request_nbytes=MAX_REQUEST_NBYTES,
                          max_media_items=MAX_MEDIA_ITEMS, max_concurrent=64,
                          media=MediaPolicy(max_nbytes=MAX_MEDIA_NBYTES, fetch_timeout_s=2.0,
                                            allowed_file_dir=self.allowed_dir, deny_private_networks=True),
                          timeouts=Timeouts(connect_s=1.0, encode_s=5.0, prefill_s=5.0, first_byte_s=5.0,
                                            idle_s=5.0, probe_s=1.0, lookup_s=1.0))
        proxy = await start_proxy(cfg, cache=CacheView(AsyncMemoryBackend(store), lookup_timeout_s=1.0),
                                  probes=False)
        self._stack.append(proxy)
        self.url = proxy.url
        self.core = proxy.core
        self._http = aiohttp.ClientSession()

    async def _send(self, case: HostileCase) -> tuple[int, bytes]:
        assert self._http is not None
        headers = {"Content-Type": "application/json", **dict(case.headers)}
        async with self._http.request(case.method, self.url + case.path, data=case.body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=20)) as resp:
            return resp.status, await resp.read()

    def _idle(self) -> str:
        core = self.core
        b = core.balancer
        for _ in range(50):
            counts = (b.live_leases(), b.active_tokens(), b.active_requests(), core.flights.in_flight(),
                      core.admission.active, len(core.pending))
            if not any(counts):
                return ""
            self._call(asyncio.sleep(0.01))
        return f"counters not at zero (leases, tokens, requests, flights, admitted, pending) = {counts}"

    def check(self, case: HostileCase) -> Verdict:
        """Send ``case``, then a normal request; judge both and the counters. Counts the case."""
        self.tried += 1
        status, data = self._call(self._send(case))
        reason = ""
        if status not in case.expect:
            reason = f"status {status} not in {sorted(case.expect)}: {data[:160]!r}"
        else:
            reason = _is_openai_error(data, status)
        if not reason:
            ok_status, ok_data = self._call(self._send(HostileCase("normal", NORMAL_BODY, frozenset({200}))))
            if ok_status != 200:
                reason = f"a normal request afterwards got {ok_status}: {ok_data[:120]!r}"
        if not reason:
            reason = self._idle()
        verdict = Verdict(case, status, not reason, reason)
        if verdict.precise:
            self.precise += 1
        else:
            self.failures.append(verdict)
        return verdict

    def close(self) -> None:
        async def stop() -> None:
            if self._http is not None:
                await self._http.close()
            for item in reversed(self._stack):
                await item.stop()

        if self._thread.is_alive():
            try:
                self._call(stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if self._resolver_factory is not None:
            from proxy import fetch

            fetch.RESOLVER_FACTORY = self._resolver_factory
            self._resolver_factory = None
        self._tmp.cleanup()


def run_hostile(n: int, seed: int = 6) -> tuple[int, int, list[Verdict]]:
    """Send ``n`` random hostile cases (seeded ``random``); returns (tried, answered precisely, failures)."""
    rng = random.Random(seed)
    with HostileTarget() as target:
        for _ in range(n):
            target.check(random_case(rng, target.allowed_dir))
        return target.tried, target.precise, list(target.failures)
