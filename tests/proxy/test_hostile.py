"""Hostile input through the real HTTP app: every case gets a precise 4xx with an OpenAI-style error body,
no traceback, and the proxy keeps serving with its counters back at zero. Run with ``-s`` to see counts."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy import fetch
from proxy.errors import MediaError
from proxy.fetch import MediaFetcher
from proxy.hostile import (
    FAKE_HOSTS,
    FAMILIES,
    INTERNAL_LITERALS,
    MAX_REQUEST_NBYTES,
    FakeResolver,
    HostileCase,
    HostileTarget,
    random_case,
    run_hostile,
)
from proxy.media import MediaPolicy

TRIED: dict[str, int] = {}


@pytest.fixture(scope="module")
def target() -> Iterator[HostileTarget]:
    original = fetch.RESOLVER_FACTORY
    with HostileTarget() as t:
        assert fetch.RESOLVER_FACTORY is FakeResolver
        yield t
        print(f"\nhostile cases tried through the proxy: {t.tried}, answered precisely: {t.precise}; "
              f"by family: {dict(sorted(TRIED.items()))}")
    assert fetch.RESOLVER_FACTORY is original, "the target restores the real resolver"


def _check(target: HostileTarget, case: HostileCase) -> None:
    family = case.family.split(":", 1)[0]
    TRIED[family] = TRIED.get(family, 0) + 1
    verdict = target.check(case)
    assert verdict.precise, f"{case.family}: {verdict.reason}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False), family=st.sampled_from(FAMILIES))
def test_hostile_request_bodies_get_precise_errors_and_leave_the_proxy_serving(
        target: HostileTarget, rng: random.Random, family: str) -> None:
    _check(target, random_case(rng, target.allowed_dir, family))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=8), lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=6)


def _acceptable(kind: str, value: Any) -> bool:
    """What the OpenAI API accepts for a field of ``kind`` (None = unset is always fine)."""
    if value is None:
        return True
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return {
        "pos_int": is_int and 1 <= value <= 2**31 - 1,
        "number": (is_int and abs(value) <= 2**53) or isinstance(value, float),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "list": isinstance(value, list),
        "stop": isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
        "model": isinstance(value, str) and bool(value),
        "messages": False,  # any generated non-message value is wrong
        "content": isinstance(value, str) or (isinstance(value, list) and not value),
    }[kind]


FIELDS = {"model": "model", "max_tokens": "pos_int", "max_completion_tokens": "pos_int", "n": "pos_int",
          "temperature": "number", "top_p": "number", "presence_penalty": "number", "user": "str",
          "echo": "bool", "stream_options": "dict", "tools": "list", "stop": "stop", "messages": "messages",
          "stream": "bool", "content": "content"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(FIELDS)), value=_JSON)
def test_wrong_types_in_any_chat_field_are_400(target: HostileTarget, name: str, value: Any) -> None:
    kind = FIELDS[name]
    if _acceptable(kind, value) or (name == "stream" and value is None):
        return
    body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    if name == "content":
        body["messages"][0]["content"] = value
    else:
        body[name] = value
    _check(target, HostileCase(f"wrong_type:{name}", json.dumps(body).encode(), frozenset({400})))


def test_seeded_hostile_run_without_hypothesis_is_all_precise() -> None:
    tried, precise, failures = run_hostile(300, seed=2026)
    print(f"\nseeded hostile run: {tried} tried, {precise} precise")
    assert tried == 300 and precise == 300, [f"{f.case.family}: {f.reason}" for f in failures[:5]]


def test_ten_thousand_nested_lists_are_400_fast(target: HostileTarget) -> None:
    for depth in (10_000, 100_000):
        t0 = time.perf_counter()
        case = HostileCase("deep_nesting", b"[" * depth + b"]" * depth,
                           frozenset({413 if 2 * depth > MAX_REQUEST_NBYTES else 400}))
        _check(target, case)
        assert time.perf_counter() - t0 < 2.0


def test_chunked_body_over_the_limit_is_413(target: HostileTarget) -> None:
    async def upload() -> tuple[int, bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"model":"tiny","messages":[{"role":"user","content":"'
            for _ in range(2 * MAX_REQUEST_NBYTES // 4096):
                yield b"x" * 4096
            yield b'"}]}'

        async with aiohttp.ClientSession() as http, http.post(target.url + "/v1/chat/completions",
                                                              data=chunks()) as resp:
            return resp.status, await resp.read()

    status, data = asyncio.run(upload())
    assert status == 413 and json.loads(data)["error"]["code"] == 413
    _check(target, random_case(random.Random(1), target.allowed_dir, "bad_scheme"))  # and still serving


def test_internal_addresses_are_refused_before_any_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connect(self: MediaFetcher) -> Any:
        raise AssertionError("the fetcher tried to open a connection")

    async def scenario() -> None:
        fetcher = MediaFetcher(MediaPolicy(deny_private_networks=True))
        monkeypatch.setattr(MediaFetcher, "_http", no_connect)
        for host in INTERNAL_LITERALS:
            with pytest.raises(MediaError, match="internal"):
                await fetcher.fetch(f"http://{host}:8080/a.png")

    asyncio.run(scenario())


def test_dns_names_resolving_to_internal_addresses_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "RESOLVER_FACTORY", FakeResolver)

    async def scenario() -> None:
        fetcher = MediaFetcher(MediaPolicy(deny_private_networks=True))
        try:
            for name in FAKE_HOSTS:
                with pytest.raises(MediaError, match="internal address"):
                    await fetcher.fetch(f"http://{name}/a.png")
        finally:
            await fetcher.close()

    asyncio.run(scenario())
