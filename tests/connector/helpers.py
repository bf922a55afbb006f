"""Helpers for connector tests: real vLLM configs and Requests, and a scheduler → worker driver."""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
import torch

MODULE_PATH = "connector.eccache_connector"


def make_vllm_config(model_dir: str, role: str, extra: dict[str, Any], *, dtype: str = "float32") -> Any:
    """A real VllmConfig for the tiny model with ECCacheConnector in `role`."""
    from vllm.config import ECTransferConfig
    from vllm.engine.arg_utils import EngineArgs

    ec = ECTransferConfig(ec_connector="ECCacheConnector", ec_connector_module_path=MODULE_PATH,
                          ec_role=cast(Any, role), ec_connector_extra_config=dict(extra))
    args = EngineArgs(model=model_dir, dtype=cast(Any, dtype), max_model_len=512, enforce_eager=True,
                      limit_mm_per_prompt={"image": 1, "video": 0}, ec_transfer_config=ec)
    return args.create_engine_config()


def make_connectors(vllm_config: Any) -> tuple[Any, Any]:
    """(scheduler-side, worker-side) connectors built the way vLLM builds them: by the factory."""
    from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorRole
    from vllm.distributed.ec_transfer.ec_connector.factory import ECConnectorFactory

    return (ECConnectorFactory.create_connector(vllm_config, ECConnectorRole.SCHEDULER),
            ECConnectorFactory.create_connector(vllm_config, ECConnectorRole.WORKER))


def make_request(request_id: str, identifier: str, *, num_embeds: int = 4, with_media: bool = True,
                 offset: int = 3) -> Any:
    """A real vLLM Request with one image item at `offset` (media, or metadata-only `image_embeds`)."""
    from vllm.multimodal.inputs import (
        MultiModalBatchedField,
        MultiModalFeatureSpec,
        MultiModalFieldElem,
        MultiModalKwargsItem,
        PlaceholderRange,
    )
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request

    fields = {"image_grid_thw": MultiModalFieldElem(data=torch.tensor([1, 4, 4]), field=MultiModalBatchedField())}
    if with_media:
        fields["pixel_values"] = MultiModalFieldElem(data=torch.zeros(16, 1176), field=MultiModalBatchedField())
    feature = MultiModalFeatureSpec(data=MultiModalKwargsItem(fields), modality="image", identifier=identifier,
                                    mm_position=PlaceholderRange(offset=offset, length=num_embeds),
                                    mm_hash=identifier)
    prompt = list(range(10, 10 + offset)) + [5] * num_embeds + [11, 12]
    return Request(request_id=request_id, prompt_token_ids=prompt, sampling_params=SamplingParams(max_tokens=4),
                   pooling_params=None, mm_features=[feature])


def resolve(scheduler: Any, request: Any, timeout_s: float = 10.0) -> bool:
    """Calls ensure_cache_available the way the scheduler loop does, until it stops deferring."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if scheduler.ensure_cache_available(request, 0):
            return True
        if request.request_id in scheduler.scheduler._unavailable:
            return False
        time.sleep(0.005)
    raise AssertionError("ensure_cache_available kept deferring")


def schedule_and_load(scheduler: Any, worker: Any, request: Any) -> dict[str, torch.Tensor]:
    """One scheduler step and one worker step for `request`: alloc → meta → bind → load."""
    encoder_cache: dict[str, torch.Tensor] = {}
    for index, feature in enumerate(request.mm_features):
        if scheduler.has_cache_item(feature.identifier):
            scheduler.update_state_after_alloc(request, index)
    meta = scheduler.build_connector_meta(None)
    worker.bind_connector_metadata(meta)
    worker.start_load_caches(encoder_cache)
    worker.clear_connector_metadata()
    report_worker_meta(scheduler, worker)
    return encoder_cache


def report_worker_meta(scheduler: Any, worker: Any) -> None:
    """Worker → scheduler metadata, as vLLM passes it; nothing where vLLM has no such channel."""
    from connector import compat

    if not compat.HAS_WORKER_META:
        return
    worker_meta = worker.build_connector_worker_meta()
    if worker_meta is not None:
        from vllm.v1.outputs import ECConnectorOutput

        scheduler.update_connector_output(ECConnectorOutput(ec_connector_worker_meta=worker_meta))


def needs_vllm(present: bool, feature: str, why: str) -> None:
    """Skips the calling test where the installed vLLM lacks `feature` (decided by feature detection)."""
    if not present:
        import pytest

        pytest.skip(f"vLLM {feature} missing: {why}")


def produce(producer_scheduler: Any, producer_worker: Any, request: Any, embedding: torch.Tensor) -> None:
    """Producer flow: alloc (records placeholder metadata) → meta → encoder ran → save_caches."""
    for index in range(len(request.mm_features)):
        producer_scheduler.update_state_after_alloc(request, index)
    meta = producer_scheduler.build_connector_meta(None)
    producer_worker.bind_connector_metadata(meta)
    identifier = request.mm_features[0].identifier
    producer_worker.save_caches({identifier: embedding}, identifier)
    producer_worker.clear_connector_metadata()


def publish(producer_scheduler: Any, producer_worker: Any, identifier: str, embedding: torch.Tensor, *,
            request_id: str = "p", num_embeds: int = 4) -> None:
    """`produce` for a fresh request, then waits until the entry is stored."""
    produce(producer_scheduler, producer_worker, make_request(request_id, identifier, num_embeds=num_embeds),
            embedding)
    assert producer_worker.worker.wait_for_saves(), "the producer's save did not finish"


def corrupt_entry(address: str, namespace: str, identifier: str) -> None:
    """Overwrites the first bytes of an entry in the server's pool with a one-sided Mooncake write."""
    from eccache import Client
    from eccache.transport.mooncake import Engine

    with Client(address) as client:
        acquired = client.acquire(namespace, [identifier])[0]
        assert acquired is not None, f"{identifier} is not in {namespace}"
        client.release([acquired])
    garbage = np.full(min(4096, acquired.info.nbytes), 0xAB, dtype=np.uint8)
    engine = Engine()
    try:
        engine.register(int(garbage.ctypes.data), garbage.nbytes)
        engine.transfer(acquired.location.te_session, int(garbage.ctypes.data), acquired.location.address,
                        garbage.nbytes, write=True)
    finally:
        engine.close()
