"""ECCacheConnector: vLLM's EC connector API over eccache (out-of-tree `ECConnectorBase`).

Load with
    --ec-transfer-config '{"ec_connector":"ECCacheConnector",
      "ec_connector_module_path":"connector.eccache_connector",
      "ec_role":"ec_producer|ec_consumer|ec_both",
      "ec_connector_extra_config":{"server":"cache-1:50051"}}'

vLLM builds one instance per role: `ECConnectorRole.SCHEDULER` in the engine core (scheduler) and
`ECConnectorRole.WORKER` in every worker. This class is a thin facade: scheduler-side calls go to
`connector.scheduler.ECCacheScheduler`, worker-side calls to `connector.worker.ECCacheWorker`; neither
side talks to the network in vLLM's hot loops (resolution and publication run on background threads).
At start-up the scheduler side registers `served model name → namespace` in eccache so the proxy
looks up exactly the namespace the connector writes.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

import torch
from vllm.distributed.ec_transfer.ec_connector.base import ECConnectorBase, ECConnectorRole

from connector import compat
from connector.client_pool import ClientPool
from connector.config import ConnectorConfig
from connector.handoff import SharedSegments, handoff_for
from connector.metadata import ECCacheConnectorMetadata, ECCacheStats
from connector.namespace import derive_namespace, identity_from_vllm_config
from connector.scheduler import ECCacheScheduler
from connector.state import Counters
from connector.tensors import torch_dtype, worker_device

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

__all__ = ["ECCacheConnector", "namespace_for"]


def namespace_for(vllm_config: VllmConfig, config: ConnectorConfig) -> str:
    """The namespace this deployment reads and writes (model identity + optional configured prefix)."""
    return derive_namespace(identity_from_vllm_config(vllm_config), config.namespace)


def _set_alias(alias: str, namespace: str, client: Any) -> None:
    client.set_alias(alias, namespace)


def _model_dtype(vllm_config: Any) -> torch.dtype:
    """The model's torch dtype (vLLM resolves "auto" and aliases to a torch.dtype when it builds the config)."""
    dtype = vllm_config.model_config.dtype
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = torch_dtype({"half": "float16", "float": "float32"}.get(str(dtype), str(dtype)))
    if resolved is None:
        raise ValueError(f"ECCacheConnector: cannot use model dtype {dtype!r}")
    return resolved


def _same_process_worker(vllm_config: Any) -> bool:
    """Whether the single worker runs in the scheduler's process (vLLM's uniproc executor)."""
    parallel = getattr(vllm_config, "parallel_config", None)
    if parallel is None:
        return True
    backend = getattr(parallel, "distributed_executor_backend", None)
    world = int(getattr(parallel, "world_size", 1) or 1)
    return world == 1 and backend in (None, "uni")


class ECCacheConnector(ECConnectorBase):
    """Shares encoder outputs through eccache: producers publish, consumers load (see module doc)."""

    def __init__(self, vllm_config: VllmConfig, role: ECConnectorRole) -> None:
        super().__init__(vllm_config=vllm_config, role=role)
        ec_config = vllm_config.ec_transfer_config
        assert ec_config is not None  # checked by the base class
        self.config = ConnectorConfig.from_extra_config(ec_config.ec_connector_extra_config)
        self.namespace = namespace_for(vllm_config, self.config)
        self.counters = Counters()
        self._pool = ClientPool(self.config)
        handoff = segments = None
        if _same_process_worker(vllm_config):
            handoff = handoff_for(str(ec_config.engine_id), self.config.staging_bytes)
        elif role == ECConnectorRole.SCHEDULER:
            segments = SharedSegments(self.config.staging_bytes)
        self._scheduler: ECCacheScheduler | None = None
        self._worker: Any = None
        if role == ECConnectorRole.SCHEDULER:
            self._scheduler = ECCacheScheduler(
                vllm_config, self.config, self.namespace,
                is_producer=self.is_producer, is_consumer=self.is_consumer,
                pool=self._pool, counters=self.counters, handoff=handoff, segments=segments,
            )
            threading.Thread(target=self._register_alias, args=(vllm_config,), name="eccache-alias",
                             daemon=True).start()
        else:
            from connector.worker import ECCacheWorker

            self._worker = ECCacheWorker(
                self.config, self.namespace,
                is_producer=self.is_producer, is_consumer=self.is_consumer,
                pool=self._pool, counters=self.counters, handoff=handoff,
                device=worker_device(), model_dtype=_model_dtype(vllm_config),
            )
        logger.info("ECCacheConnector %s (%s) namespace=%s servers=%s", role.name,
                    ec_config.ec_role, self.namespace, ",".join(self.config.servers))

    def _register_alias(self, vllm_config: Any) -> None:
        names = getattr(vllm_config.model_config, "served_model_name", None) or vllm_config.model_config.model
        if isinstance(names, str):
            names = [names]
        for name in names:
            try:
                self._pool.call(functools.partial(_set_alias, name, self.namespace))
            except Exception as exc:  # noqa: BLE001 - the proxy then treats items as cold
                logger.warning("eccache: registering alias %s -> %s failed: %s", name, self.namespace, exc)

    # ============================== worker side

    @property
    def worker(self) -> Any:
        assert self._worker is not None, "worker-side call on a scheduler-side ECCacheConnector"
        return self._worker

    @property
    def scheduler(self) -> ECCacheScheduler:
        assert self._scheduler is not None, "scheduler-side call on a worker-side ECCacheConnector"
        return self._scheduler

    def start_load_caches(self, encoder_cache: dict[str, torch.Tensor], **kwargs: Any) -> None:
        self.worker.start_load_caches(encoder_cache, self._connector_metadata)

    def save_caches(self, encoder_cache: dict[str, torch.Tensor], mm_hash: str, **kwargs: Any) -> None:
        self.worker.save_caches(encoder_cache, mm_hash, self._connector_metadata)

    def start_save_caches(self, **kwargs: Any) -> None:
        encoder_cache = kwargs.get("encoder_cache")
        if encoder_cache is not None and self._connector_metadata is not None:
            self.worker.start_save_caches(encoder_cache, self._connector_metadata)

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        return None, None

    def build_connector_worker_meta(self) -> Any:
        return self.worker.build_worker_meta() if self._worker is not None else None

    # ============================== scheduler side

    def has_cache_item(self, identifier: str) -> bool:
        scheduler = self.scheduler
        if not compat.HAS_ENSURE_HOOK:
            scheduler.resolve_now([identifier])  # older vLLM: no deferral hook to resolve ahead
        return scheduler.has_cache_item(identifier)

    def ensure_cache_available(self, request: Any, num_computed_tokens: int) -> bool:
        return self.scheduler.ensure_cache_available(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, index: int) -> None:
        self.scheduler.update_state_after_alloc(request, index)

    def build_connector_meta(self, scheduler_output: Any) -> ECCacheConnectorMetadata:
        return self.scheduler.build_connector_meta(scheduler_output)

    def update_connector_output(self, connector_output: Any) -> None:
        self.scheduler.update_connector_output(connector_output)

    def take_unavailable_requests(self) -> set[str]:
        return self.scheduler.take_unavailable_requests()

    def request_finished(self, request: Any) -> tuple[bool, dict[str, Any] | None]:
        return self.scheduler.request_finished(request)

    # ============================== both sides

    def get_ec_connector_stats(self) -> ECCacheStats | None:
        delta = self.counters.take_delta() if self._scheduler is not None else {}
        return ECCacheStats(data=delta) if delta else None

    @classmethod
    def build_ec_connector_stats(cls, data: dict[str, Any] | None = None) -> ECCacheStats | None:
        return ECCacheStats(data=dict(data or {}))

    @classmethod
    def build_prom_metrics(
        cls,
        vllm_config: Any,
        metric_types: dict[type, type],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> Any:
        from connector.prom import ECCachePromMetrics

        return ECCachePromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown()
        if self._worker is not None:
            self._worker.shutdown()
        self._pool.close()

