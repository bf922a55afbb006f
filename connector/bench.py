"""Load time of one embedding through ECCacheConnector vs vLLM's ECExampleConnector, same machine, same run.

    python -m connector.bench [--server HOST:PORT] [--rows 1369 --width 3584 --dtype bfloat16] [--iterations 20]

Without `--server` an `eccache serve` (Mooncake over TCP, embedded index) is started for the run.
Both connectors are driven through vLLM's calls, as the engine makes them: the producer saves once;
then each iteration is one consumer request: scheduler side (ECCache: `ensure_cache_available`, which
acquires and verifies; Example: `has_cache_item`, a file check) → `update_state_after_alloc` →
`build_connector_meta` → worker `start_load_caches`. ECCache is measured twice: with the worker in the
scheduler's process (vLLM's uniproc executor, one GPU: it takes the verified tensor) and in its own
process (multiproc executor: it copies the verified bytes from a shared-memory segment). The example connector reads a safetensors file from a folder (page cache: it never leaves the
host). The VllmConfig is a stand-in holding a real ECTransferConfig: no model is loaded.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import types
import uuid
from collections.abc import Callable
from typing import Any, cast

import torch

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _stand_in_config(connector: str, module: str | None, role: str, extra: dict[str, Any], *,
                     dtype: torch.dtype, width: int, executor: str) -> Any:
    from vllm.config import ECTransferConfig

    ec = ECTransferConfig(ec_connector=connector, ec_connector_module_path=module, ec_role=cast(Any, role),
                          ec_connector_extra_config=extra)
    model_config = types.SimpleNamespace(
        model="bench/encoder", revision="main", dtype=dtype, served_model_name="bench",
        multimodal_config=None, get_hidden_size=lambda: width,
    )
    parallel = types.SimpleNamespace(world_size=1, distributed_executor_backend=executor)
    return types.SimpleNamespace(ec_transfer_config=ec, model_config=model_config, parallel_config=parallel)


def _request(identifier: str, rows: int) -> Any:
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange

    feature = MultiModalFeatureSpec(data=None, modality="image", identifier=identifier,
                                    mm_position=PlaceholderRange(offset=0, length=rows))
    return types.SimpleNamespace(request_id="bench-" + uuid.uuid4().hex[:8], mm_features=[feature],
                                 get_num_encoder_embeds=lambda index: rows)


def _touch(tensor: torch.Tensor) -> None:
    """Reads one byte per page: a memory-mapped load (safetensors) is only paid when the data is used."""
    flat = tensor.reshape(-1).view(torch.uint8)
    int(flat[::4096].sum())


def _consume_once(scheduler: Any, worker: Any, request: Any) -> tuple[float, float, torch.Tensor]:
    identifier = request.mm_features[0].identifier
    t0 = time.perf_counter()
    if hasattr(scheduler, "scheduler"):  # ECCacheConnector: resolve ahead, as vLLM's deferral loop does
        while not scheduler.ensure_cache_available(request, 0):
            time.sleep(0.0002)
    assert scheduler.has_cache_item(identifier), "the embedding was not found"
    scheduler.update_state_after_alloc(request, 0)
    meta = scheduler.build_connector_meta(None)
    t1 = time.perf_counter()
    worker.bind_connector_metadata(meta)
    cache: dict[str, torch.Tensor] = {}
    worker.start_load_caches(cache)
    worker.clear_connector_metadata()
    _touch(cache[identifier])
    t2 = time.perf_counter()
    if hasattr(scheduler, "scheduler"):
        scheduler.request_finished(request)
    return t1 - t0, t2 - t1, cache[identifier]


def _measure(name: str, make: Callable[[], tuple[Any, Any, Any, Any]], embedding: torch.Tensor,
             iterations: int) -> dict[str, Any]:
    from vllm.distributed.ec_transfer.ec_connector.factory import ECConnectorFactory  # noqa: F401

    p_sched, p_work, c_sched, c_work = make()
    if hasattr(p_sched, "scheduler"):  # the stand-in config has no processor to read placeholder fields from
        p_sched.scheduler._metadata_resolver = types.SimpleNamespace(fields_for=lambda modality: set())
    identifier = "bench-" + uuid.uuid4().hex
    p_sched.update_state_after_alloc(_request(identifier, embedding.shape[0]), 0)
    p_work.bind_connector_metadata(p_sched.build_connector_meta(None))
    p_work.save_caches({identifier: embedding}, identifier)
    if hasattr(p_work, "worker"):
        assert p_work.worker.wait_for_saves(30.0), "publication did not finish"
    scheds, works, totals = [], [], []
    for i in range(iterations + 2):
        sched_s, work_s, loaded = _consume_once(c_sched, c_work, _request(identifier, embedding.shape[0]))
        if i == 0:
            assert torch.equal(loaded.view(torch.uint8), embedding.view(torch.uint8)), f"{name}: not bit-exact"
        if i >= 2:  # warm-up: connections, first registration
            scheds.append(sched_s)
            works.append(work_s)
            totals.append(sched_s + work_s)
    for c in (p_sched, p_work, c_sched, c_work):
        c.shutdown()
    return {"name": name, "scheduler_ms": statistics.median(scheds) * 1e3,
            "worker_ms": statistics.median(works) * 1e3, "total_ms": statistics.median(totals) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eccache bench connector", description=__doc__.split("\n")[0])
    parser.add_argument("--server", help="host:port of a running eccache server (default: start one)")
    parser.add_argument("--transport", default="mooncake", choices=["mooncake", "inline"])
    parser.add_argument("--rows", type=int, default=1369)
    parser.add_argument("--width", type=int, default=3584)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(_DTYPES))
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args(argv)

    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorRole
    from vllm.distributed.ec_transfer.ec_connector.factory import ECConnectorFactory

    dtype = _DTYPES[args.dtype]
    embedding = torch.randn(args.rows, args.width).to(dtype)
    nbytes = embedding.numel() * embedding.element_size()

    server_proc = None
    address = args.server
    if address is None:
        from eccache.launch import ServerProcess

        server_proc = ServerProcess(pool_size=f"{max(256, 4 * nbytes >> 20)}MiB", transport=args.transport)
        address = server_proc.address

    def pair(connector: str, module: str | None, extra: dict[str, Any], executor: str) -> tuple[Any, Any, Any, Any]:
        def build(role: str) -> tuple[Any, Any]:
            config = _stand_in_config(connector, module, role, extra, dtype=dtype, width=args.width,
                                      executor=executor)
            return (ECConnectorFactory.create_connector(config, ECConnectorRole.SCHEDULER),
                    ECConnectorFactory.create_connector(config, ECConnectorRole.WORKER))

        return (*build("ec_producer"), *build("ec_consumer"))

    extra = {"server": address, "transport": args.transport}
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="ec-example-") as folder:
            results.append(_measure("ECExampleConnector (safetensors file, page cache)",
                                    lambda: pair("ECExampleConnector", None, {"shared_storage_path": folder}, "uni"),
                                    embedding, args.iterations))
        results.append(_measure("ECCacheConnector, worker in scheduler process",
                                lambda: pair("ECCacheConnector", "connector.eccache_connector", extra, "uni"),
                                embedding, args.iterations))
        results.append(_measure("ECCacheConnector, worker in its own process",
                                lambda: pair("ECCacheConnector", "connector.eccache_connector", extra, "mp"),
                                embedding, args.iterations))
    finally:
        if server_proc is not None:
            server_proc.stop()

    base = results[0]["total_ms"]
    print(f"one embedding {tuple(embedding.shape)} {args.dtype} = {nbytes / 1e6:.1f} MB, transport "
          f"{args.transport}, median of {args.iterations}, torch threads {torch.get_num_threads()}")
    print(f"{'connector':<52} {'sched ms':>9} {'worker ms':>9} {'total ms':>9} {'GB/s':>6} {'vs example':>10}")
    for r in results:
        print(f"{r['name']:<52} {r['scheduler_ms']:9.2f} {r['worker_ms']:9.2f} {r['total_ms']:9.2f} "
              f"{nbytes / r['total_ms'] / 1e6:6.2f} {r['total_ms'] / base:9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
